"""The view versions a served model version reads, fixed once for the life of the process.

A model version from the model registry names every feature with its view version (``view@2:feature``:
the registry takes no other form, and the trainer pins what it trained on), so a new version of a view
never changes what it reads. A model of the static ``--model-config`` may name a view without a version
(``driver_stats``, ``driver_stats:f0``). Resolved at every read to the newest servable version, such a
reference made a running model read a version registered after it was loaded: a new version registered
ACTIVE before its backfill answered NOT_FOUND for every entity, and one with other features fed the
model columns it was never trained on. So each such reference is pinned the first time the model version
is served, to the view's newest servable version then (as a registration pins to the newest version), and
read there until the process restarts; a warning names the pin, so an operator can write it into the
config. A version that later stops being servable is NOT_FOUND naming it, as for a pinned reference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from clients.feature_refs import FeatureRef
from data_plane.catalog import Catalog
from data_plane.models.spec import ModelSpec
from data_plane.refs import parse_ref

_log = logging.getLogger("aether.data_plane.feature_pins")


class FeaturePins:
    def __init__(self, catalog: Callable[[], Catalog]) -> None:
        """``catalog``: the current catalog (UNAVAILABLE while there is none)."""
        self._catalog = catalog
        # Per model version and its online references as configured: those references pinned. Only static
        # models have unpinned references, so this holds at most one entry per version of the static config
        # and is never trimmed (dropping a pin would move the model to whatever version is newest then).
        self._pins: dict[tuple[tuple[str, int], tuple[str, ...]], tuple[str, ...]] = {}

    def pinned(self, spec: ModelSpec, online: tuple[str, ...]) -> tuple[str, ...]:
        """``online`` (``spec``'s references read from the online store) with each reference that names
        no view version pinned to the version chosen the first time this was asked for ``spec``; ``online``
        itself when every reference names its version. NOT_FOUND for a view the catalog does not serve
        (nothing is pinned then: the next request tries again)."""
        key = (spec.key, online)
        found = self._pins.get(key)
        if found is not None:
            return found
        parsed = [parse_ref(text) for text in online]
        if all(ref.version is not None for ref in parsed):
            return online
        catalog = self._catalog()
        pinned = tuple(
            text
            if ref.version is not None
            else str(FeatureRef(ref.view, self._newest(catalog, ref), ref.feature))
            for text, ref in zip(online, parsed, strict=True)
        )
        self._pins[key] = pinned
        chosen = ", ".join(f"{a!r} -> {b!r}" for a, b in zip(online, pinned, strict=True) if a != b)
        _log.warning(
            "model %s v%d names feature views without a version; pinned to the newest servable versions"
            " (registry revision %d) for as long as this process serves it: %s. Write the versions into"
            " the model config to choose them",
            spec.name, spec.version, catalog.revision, chosen,
        )  # fmt: skip
        return pinned

    @staticmethod
    def _newest(catalog: Catalog, ref: FeatureRef) -> int:
        return catalog.view_version(ref.view).version
