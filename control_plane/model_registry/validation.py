"""Checks of model-registry requests that need no database: names, signatures, feature references,
metrics. Each failure is ``InvalidArgument`` naming the offending field."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from clients.aether.v1 import model_registry_pb2 as pb
from clients.errors import InvalidArgument
from control_plane.db import keyset
from control_plane.db.models import NAME_LENGTH
from control_plane.model_registry.tables import (
    DATASET_HASH_LENGTH,
    GIT_COMMIT_LENGTH,
    RUN_ID_LENGTH,
    ModelVersionRow,
)

#: Model names and aliases: lowercase words joined by ``_`` or ``-`` (a model name is often a service
#: name such as ``eta-predictor``).
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]*$")
#: The largest version number: model versions and feature view versions are 32-bit ``Integer`` columns,
#: and PostgreSQL refuses a larger bound value with an "integer out of range" error.
MAX_VERSION = 2**31 - 1
#: An artifact's content hash as the artifact store names it: a sha256 in lowercase hex.
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
#: ``view@version:feature`` (see :class:`FeatureRef`); at most 10 digits, then :data:`MAX_VERSION`.
FEATURE_REF_PATTERN = re.compile(r"^([a-z_][a-z0-9_]*)@([1-9][0-9]{0,9}):([a-z_][a-z0-9_]*)$")
DTYPES = frozenset(
    {
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "bfloat16",
        "float32",
        "float64",
        "string",
    }
)
MAX_TAGS = 64
MAX_VALUE_LENGTH = 6000
#: The longest review reason: as long as a tag's or a hyperparameter's value. A reason is kept in the
#: version's message, which every read returns: an 800,000-character one made a version that no read could
#: return within gRPC's 4 MiB (see :data:`control_plane.db.pages.MAX_GROWN_ITEM_BYTES`).
MAX_REASON_LENGTH = MAX_VALUE_LENGTH
#: The most aliases one registered model may have. Each alias is listed in the model's message and in its
#: version's, so without a bound enough of them made a model no read could return; 100 aliases of at most
#: 128 characters add under 14 kB to either message. Moving an existing alias is allowed at the bound.
MAX_ALIASES = 100


@dataclass(frozen=True, order=True)
class FeatureRef:
    """A model's input feature pinned to one version of its feature view."""

    view: str
    version: int
    feature: str

    def __str__(self) -> str:
        return f"{self.view}@{self.version}:{self.feature}"


def check_model_name(name: str, field: str = "model_name") -> str:
    if not NAME_PATTERN.fullmatch(name) or len(name) > NAME_LENGTH:
        raise InvalidArgument(
            f"{field}: invalid model name {name!r}: must match {NAME_PATTERN.pattern},"
            f" at most {NAME_LENGTH} characters"
        )
    return name


def check_alias(alias: str) -> str:
    if not NAME_PATTERN.fullmatch(alias) or len(alias) > NAME_LENGTH:
        raise InvalidArgument(
            f"alias: invalid alias {alias!r}: must match {NAME_PATTERN.pattern},"
            f" at most {NAME_LENGTH} characters"
        )
    return alias


def check_reason(reason: str) -> str:
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidArgument(
            f"reason: a review reason is at most {MAX_REASON_LENGTH:,} characters, got {len(reason):,}"
        )
    return reason


def check_version(version: int, field: str = "version", what: str = "a model version") -> int:
    if not 1 <= version <= MAX_VERSION:
        raise InvalidArgument(f"{field}: {what} is a number from 1 to {MAX_VERSION}, got {version}")
    return version


#: ListModelVersions' page order: by version, within one model.
_VERSION_KEY = keyset.KeyColumn(ModelVersionRow.version.expression, int)


def _versions_scope(model_name: str, status: pb.ApprovalStatus) -> str:
    return keyset.scope_digest(model_name, int(status))


def parse_version_token(page_token: str, model_name: str, status: pb.ApprovalStatus) -> int:
    """The version after which a page of ``model_name``'s versions (of approval ``status``) starts, 0 for
    the first page; ``InvalidArgument`` for a token another model, filter or listing gave out, a
    malformed one, and the bare version numbers of releases before (they named no model: one from
    another model silently skipped this one's versions up to its number)."""
    return keyset.position(
        page_token,
        "ListModelVersions",
        _versions_scope(model_name, status),
        _VERSION_KEY,
        MAX_VERSION,
        scope_name="model or status filter",
    )


def version_token(model_name: str, status: pb.ApprovalStatus, version: int) -> str:
    """The token of the page of ``model_name``'s versions (of approval ``status``) after ``version``."""
    return keyset.encode("ListModelVersions", _versions_scope(model_name, status), [version])


def check_tags(tags: dict[str, str], field: str = "tags") -> dict[str, str]:
    if len(tags) > MAX_TAGS:
        raise InvalidArgument(f"{field}: at most {MAX_TAGS} tags, got {len(tags)}")
    for key, value in tags.items():
        if not key or len(key) > NAME_LENGTH:
            raise InvalidArgument(f"{field}: tag keys are 1 to {NAME_LENGTH} characters, got {key!r}")
        if len(value) > MAX_VALUE_LENGTH:
            raise InvalidArgument(f"{field}[{key!r}]: longer than {MAX_VALUE_LENGTH} characters")
    return tags


def parse_feature_ref(text: str, field: str = "feature_refs") -> FeatureRef:
    match = FEATURE_REF_PATTERN.fullmatch(text)
    if match is None:
        raise InvalidArgument(
            f"{field}: {text!r} is not a feature reference of the form view@version:feature"
            f" (version a number from 1 to {MAX_VERSION})"
        )
    version = check_version(int(match[2]), field, f"the feature view version in {text!r}")
    return FeatureRef(match[1], version, match[3])


def parse_feature_refs(refs: list[str]) -> list[FeatureRef]:
    parsed = [parse_feature_ref(ref, f"feature_refs[{index}]") for index, ref in enumerate(refs)]
    seen: set[FeatureRef] = set()
    for ref in parsed:
        if ref in seen:
            raise InvalidArgument(f"feature_refs: {ref} is listed twice")
        seen.add(ref)
    return parsed


def _check_tensors(tensors: list[pb.TensorSpec], field: str) -> None:
    names: set[str] = set()
    for index, tensor in enumerate(tensors):
        path = f"{field}[{index}]"
        if not tensor.name or len(tensor.name) > NAME_LENGTH:
            raise InvalidArgument(f"{path}.name: a tensor name is 1 to {NAME_LENGTH} characters")
        if tensor.name in names:
            raise InvalidArgument(f"{path}.name: duplicate tensor {tensor.name!r}")
        names.add(tensor.name)
        if tensor.dtype not in DTYPES:
            raise InvalidArgument(f"{path}.dtype: unknown dtype {tensor.dtype!r}; one of {sorted(DTYPES)}")
        for dim in tensor.shape:
            if dim < -1:
                raise InvalidArgument(f"{path}.shape: dimensions are >= 0, or -1 for dynamic; got {dim}")


#: The most classes a signature may list (an output column each).
MAX_CLASSES = 100_000


def check_signature(signature: pb.ModelSignature) -> None:
    _check_tensors(list(signature.inputs), "signature.inputs")
    _check_tensors(list(signature.outputs), "signature.outputs")
    classes = list(signature.classes)
    if len(set(classes)) != len(classes) or len(classes) > MAX_CLASSES or not all(classes):
        raise InvalidArgument(
            f"signature.classes: at most {MAX_CLASSES} distinct, non-empty label values, one a column"
        )


def check_version_request(request: pb.CreateModelVersionRequest) -> list[FeatureRef]:
    """Every database-free check of a registration; returns its parsed feature references."""
    check_model_name(request.model_name)
    if len(request.run_id) > RUN_ID_LENGTH:
        raise InvalidArgument(f"run_id: longer than {RUN_ID_LENGTH} characters")
    if not request.artifact_sha256:
        raise InvalidArgument("artifact_sha256: a model version needs its artifact (upload it first)")
    if not SHA256_PATTERN.fullmatch(request.artifact_sha256):
        # Checked here, not left to the artifact store, whose message names no field of this request.
        raise InvalidArgument(
            f"artifact_sha256: {request.artifact_sha256[:80]!r} is not a sha256 (64 lowercase hex digits)"
            " of an uploaded artifact"
        )
    check_signature(request.signature)
    if len(request.dataset.hash) > DATASET_HASH_LENGTH:
        raise InvalidArgument(f"dataset.hash: longer than {DATASET_HASH_LENGTH} characters")
    if len(request.git_commit) > GIT_COMMIT_LENGTH:
        raise InvalidArgument(f"git_commit: longer than {GIT_COMMIT_LENGTH} characters")
    for key, value in request.metrics.items():
        if not key or len(key) > NAME_LENGTH:
            raise InvalidArgument(f"metrics: metric names are 1 to {NAME_LENGTH} characters, got {key!r}")
        if not math.isfinite(value):
            raise InvalidArgument(f"metrics[{key!r}]: {value} is not a finite number")
    check_tags(dict(request.hyperparameters), "hyperparameters")
    return parse_feature_refs(list(request.feature_refs))
