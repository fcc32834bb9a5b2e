"""The feature count every logged row of a model version must have, as the monitor's windows learn it.

Once a version has a reference profile, its windows take the version's feature count as the count every
row must have (:meth:`.windows.TumblingWindows.expect_width`), so that a stray row of another count is
the mismatch, not the good rows after it. The count is the version's ``feature_refs``' (the columns the
data plane logs for it, which the profile's features are paired with by name: :mod:`.columns`), else,
for a version listing none, the profile's. A version without a reference is looked up again every
``WIDTH_RECHECK_S``; a reference that cannot be read now is left unknown (the window's report reads it
again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from control_plane.monitoring.profiles import LoadedReference, ReferenceCache

#: How often a version with no reference is looked up again for its feature count.
WIDTH_RECHECK_S = 30.0
_log = logging.getLogger("aether.control_plane.monitoring")


def expected_width(references: LoadedReference) -> int | None:
    """The feature count every logged row of a version with ``references`` must have, once it has a
    reference profile: its ``feature_refs``' (the columns the data plane logs for it; the profile's
    features are paired with them by name, and may be fewer or more), else, where it lists none, the
    profile's (paired by position). None without a profile: each window takes its first row's."""
    if references.features is None:
        return None
    return len(references.logged_names) or references.features[0].n_features


class VersionWidths:
    """The feature count (:func:`expected_width`) of each (model, version) looked up so far (None: no
    reference) and when it was looked up, on the ``monotonic`` clock."""

    def __init__(self, references: ReferenceCache, monotonic: Callable[[], float]) -> None:
        self._references = references
        self._monotonic = monotonic
        self._widths: dict[tuple[str, int], tuple[int | None, float]] = {}

    def get(self, model: str, version: int) -> int | None:
        """The version's feature count, when known."""
        return self._widths.get((model, version), (None, 0.0))[0]

    def learned(self, model: str, version: int, references: LoadedReference) -> int | None:
        """Records the count of ``references`` just read for the version (by its report) and returns it."""
        width = expected_width(references)
        if width is not None:
            self._widths[(model, version)] = (width, self._monotonic())
        return width

    async def learn(self, versions: Iterable[tuple[str, int]]) -> None:
        """Looks up the feature count of each of ``versions`` not known yet (again every
        ``WIDTH_RECHECK_S`` while it has none)."""
        now = self._monotonic()
        for model, version in set(versions):
            known = self._widths.get((model, version))
            if known is not None and (known[0] is not None or now - known[1] < WIDTH_RECHECK_S):
                continue
            try:
                loaded = await asyncio.to_thread(self._references.get, model, version)
            except Exception as exc:  # DB down, a damaged blob: the report says so when it reads it
                _log.debug("reference of %s/%s not read for its feature count: %s", model, version, exc)
                continue
            self._widths[(model, version)] = (expected_width(loaded), now)
