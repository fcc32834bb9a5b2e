"""The view versions a served model version reads, fixed once for the life of the data plane.

A model version from the model registry names every feature with its view version (``view@2:feature``:
the registry takes no other form, and the trainer pins what it trained on), so a new version of a view
never changes what it reads. A model of the static ``--model-config`` may name a view without a version
(``driver_stats``, ``driver_stats:f0``). Resolved at every read to the newest servable version, such a
reference made a running model read a version registered after it was loaded: a new version registered
ACTIVE before its backfill answered NOT_FOUND for every entity, and one with other features fed the
model columns it was never trained on. So each such reference is pinned the first time the model version
is served, to the view's newest servable version then (as a registration pins to the newest version), and
read there until the data plane restarts; a warning names each pin and the ``view@N`` to write into the
config to keep it (a restart pins the newest servable version again). A version that later stops being
servable is NOT_FOUND naming it, as for a pinned reference.

One data plane is one pinned set, also with ``--workers N``: its parent opens one file for all its workers
(:func:`open_shared_pins`; anonymous, it goes with the last of them) and hands it to each
(``--feature-pins-fd``). The first worker to serve a model version chooses its pins and writes them there,
under an exclusive lock; every other worker reads them from there. Each worker choosing on its own, two
workers of one server read different versions of a view when one was applied between their first
requests, and a client saw its answers change with the connection the kernel gave it. A worker whose
registry snapshot has not yet caught up with the version another one pinned (each follows the registry on
a watch stream of its own) takes the newer snapshot from the snapshot file the workers share, where the
sibling's watch wrote it, before it answers NOT_FOUND (:meth:`data_plane.registry_watch.RegistryWatch.
catch_up`, asked by the feature assembler on that error path only): it answered NOT_FOUND until its own
stream brought the version. Only in the moment between a sibling installing a snapshot and writing it to
the file (its pin may come in between) is the pinned version still NOT_FOUND here, for that request.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Callable

from clients.feature_refs import FeatureRef
from data_plane.catalog import Catalog
from data_plane.models.spec import ModelSpec
from data_plane.refs import parse_ref

_log = logging.getLogger("aether.data_plane.feature_pins")

#: One entry per line: ``{"model": NAME, "version": N, "refs": [...as configured], "pinned": [...]}``.
PinKey = tuple[tuple[str, int], tuple[str, ...]]


def open_shared_pins() -> int:
    """A new, empty, nameless file for the workers of one data plane to agree on pins through: its
    descriptor, inheritable (pass it to each worker, with ``--feature-pins-fd``). Nameless, nothing is left
    behind however the data plane ends, and a restart starts with no pins."""
    with tempfile.TemporaryFile(prefix="aether-feature-pins-") as file:
        descriptor = os.dup(file.fileno())
    os.set_inheritable(descriptor, True)
    return descriptor


class SharedPins:
    """The pins of every worker of one data plane, in the file ``descriptor`` (see the module's docstring).
    Every worker holds the same open file (inherited), so the lock is a POSIX record lock, which is held per
    process (a flock on a shared open file description would exclude nobody), and reads and writes name
    their offset (the description's offset is shared too)."""

    def __init__(self, descriptor: int) -> None:
        self._descriptor = descriptor

    def agree(self, key: PinKey, choose: Callable[[], tuple[str, ...]]) -> tuple[tuple[str, ...], bool]:
        """The pins recorded for ``key``, else those ``choose()`` makes, recorded; and whether they were
        made here. Whatever ``choose`` raises (a view not served yet) records nothing. The lock is held for
        a file read and, at most, a catalog lookup and one small write, once per model version per worker,
        so it blocks the event loop for no longer than a log line's write would."""
        fcntl.lockf(self._descriptor, fcntl.LOCK_EX)
        try:
            recorded = self._read().get(key)
            if recorded is not None:
                return recorded, False
            chosen = choose()
            (name, version), refs = key
            line = json.dumps({"model": name, "version": version, "refs": refs, "pinned": chosen}) + "\n"
            os.pwrite(self._descriptor, line.encode(), os.fstat(self._descriptor).st_size)
            return chosen, True
        finally:
            fcntl.lockf(self._descriptor, fcntl.LOCK_UN)

    def _read(self) -> dict[PinKey, tuple[str, ...]]:
        size = os.fstat(self._descriptor).st_size
        text = os.pread(self._descriptor, size, 0).decode()
        found: dict[PinKey, tuple[str, ...]] = {}
        for line in text.splitlines():
            entry = json.loads(line)  # written whole under the lock: never a partial line
            found[((entry["model"], int(entry["version"])), tuple(entry["refs"]))] = tuple(entry["pinned"])
        return found


class FeaturePins:
    def __init__(self, catalog: Callable[[], Catalog], shared: SharedPins | None = None) -> None:
        """``catalog``: the current catalog (UNAVAILABLE while there is none); ``shared``: the pins of the
        other workers of this data plane (``--workers N``), None for a data plane of one process."""
        self._catalog = catalog
        self._shared = shared
        # Per model version and its online references as configured: those references pinned. Only static
        # models have unpinned references, so this holds at most one entry per version of the static config
        # and is never trimmed (dropping a pin would move the model to whatever version is newest then).
        self._pins: dict[PinKey, tuple[str, ...]] = {}

    def pinned(self, spec: ModelSpec, online: tuple[str, ...]) -> tuple[str, ...]:
        """``online`` (``spec``'s references read from the online store) with each reference that names
        no view version pinned to the version chosen the first time this data plane was asked for
        ``spec`` (by any of its workers); ``online`` itself when every reference names its version.
        NOT_FOUND for a view the catalog does not serve (nothing is pinned then: the next request tries
        again)."""
        key: PinKey = (spec.key, online)
        found = self._pins.get(key)
        if found is not None:
            return found
        parsed = [parse_ref(text) for text in online]
        if all(ref.version is not None for ref in parsed):
            return online
        revision: list[int] = []

        def choose() -> tuple[str, ...]:
            catalog = self._catalog()
            revision.append(catalog.revision)
            return tuple(
                text
                if ref.version is not None
                else str(FeatureRef(ref.view, self._newest(catalog, ref), ref.feature))
                for text, ref in zip(online, parsed, strict=True)
            )

        if self._shared is None:
            pinned, chose = choose(), True
        else:
            pinned, chose = self._shared.agree(key, choose)
        self._pins[key] = pinned
        _log_pins(spec, online, pinned, revision[0] if chose else None, self._shared is not None)
        return pinned

    @staticmethod
    def _newest(catalog: Catalog, ref: FeatureRef) -> int:
        return catalog.view_version(ref.view).version


def _log_pins(
    spec: ModelSpec, online: tuple[str, ...], pinned: tuple[str, ...], revision: int | None, workers: bool
) -> None:
    """The warning naming each pin, and what to write into the config to keep it across restarts."""
    changed = [(a, b) for a, b in zip(online, pinned, strict=True) if a != b]
    chosen = ", ".join(f"{a!r} -> {b!r}" for a, b in changed)
    views = sorted(
        {str(FeatureRef(ref.view, ref.version, None)) for ref in (parse_ref(b) for _, b in changed)}
    )
    how = (
        f"pinned to the newest servable versions (registry revision {revision})"
        if revision is not None
        else "pinned as another worker of this data plane pinned them"
    )
    scope = "this data plane (every worker)" if workers else "this data plane"
    _log.warning(
        "model %s v%d names feature views without a version; %s for as long as %s serves it: %s. A restart"
        " pins the newest servable versions again: write the version into the model config's feature_refs"
        " (%s) to keep it",
        spec.name, spec.version, how, scope, chosen, ", ".join(repr(v) for v in views),
    )  # fmt: skip
