"""How a spec given for a version the manager holds is compared: with the spec it holds (which fields
changed, and which of them a loaded version cannot take in place), and with the artifact it loaded
(whether the declared signature fits the model's own)."""

from __future__ import annotations

import dataclasses

from data_plane.models.spec import ModelSpec, TensorSpec

# Fields a loaded version cannot change in place: the signature is checked against the artifact at load
# and the session and its warm-up are built for it. For one artifact it only differs when the spec is wrong,
# so such a change is refused (FAILED_PRECONDITION) rather than reloaded: the version keeps serving with the
# signature it was checked against. (``name``/``version`` are the key, ``artifact_sha256`` is checked on
# its own.) ``warmup_requests`` and ``warmup_samples_uri`` are taken but only matter to a later load: the
# version is warm already, and re-warming it would gain nothing for the requests served.
RELOAD_FIELDS = frozenset({"inputs", "outputs"})


def changed_fields(old: ModelSpec, new: ModelSpec) -> list[str]:
    return [f.name for f in dataclasses.fields(ModelSpec) if getattr(old, f.name) != getattr(new, f.name)]


def signature_mismatch(declared: tuple[TensorSpec, ...], actual: tuple[TensorSpec, ...]) -> str | None:
    by_name = {t.name: t for t in actual}
    for tensor in declared:
        found = by_name.get(tensor.name)
        if found is None:
            return f"the model has no tensor named {tensor.name!r} (it has {sorted(by_name)})"
        if found.dtype != tensor.dtype:
            return f"tensor {tensor.name!r} is {found.dtype} in the model, {tensor.dtype} in the spec"
        # The spec may fix a size the model leaves free, never free one the model fixes: requests are
        # checked against the spec, so a size the model refuses would reach it (INTERNAL, not
        # INVALID_ARGUMENT), and a free first dimension makes the version batch (its full-batch warm-up
        # would fail the load).
        if len(found.shape) != len(tensor.shape) or any(
            a != d and a != -1 for a, d in zip(found.shape, tensor.shape, strict=True)
        ):
            return (
                f"tensor {tensor.name!r} has shape {list(found.shape)} in the model, "
                f"{list(tensor.shape)} in the spec"
            )
    return None
