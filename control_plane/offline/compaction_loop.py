"""The control plane's background compaction: every interval, one pass (:func:`compact_view`) over every
view of the offline store, so streaming views' small files get merged without anyone asking.

Passes run in a worker thread (file work); the first waits one interval, so a control plane that
restarts in a loop does not compact at every start. A view whose pass fails is logged and retried next
time (the store's own answer, a setup fault or an outage, named in one warning line; anything else with
its traceback); the others go on. A partition with a file that does not decode is left as it is and the
pass goes on (``compact_view``): the pass names each such file in one warning line with what the operator
must do, since waiting never mends damaged bytes. A pass never blocks the ``aetherctl offline compact`` RPC
for long: both take one partition's lock at a time, and the one that finds it held skips that partition
(reported busy).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Collection

from clients.database_errors import database_unavailable
from clients.errors import FailedPrecondition, Unavailable
from control_plane.background import BackgroundLoop
from control_plane.offline.compaction import CompactionPolicy, CompactionReport, compact_view
from control_plane.offline.partition_locks import PartitionLock
from control_plane.offline.store import OfflineStore

_log = logging.getLogger("aether.offline.compaction")


class CompactionLoop:
    def __init__(
        self,
        store: OfflineStore,
        policy: CompactionPolicy,
        interval_s: float,
        locks: PartitionLock | None = None,
        pending: Callable[[], Collection[str]] | None = None,
    ) -> None:
        self._store = store
        self._pending = pending  # the files of uncounted chunks, never merged (``compact_view``)
        self._locks = locks  # None: a local root's own file locks
        self._policy = policy
        self._interval_s = interval_s
        self._background = BackgroundLoop("offline-compaction")

    def run_once(self, now: dt.datetime | None = None) -> dict[str, CompactionReport]:
        """One pass over every view with offline data; the report of each view that did not fail. A
        metadata database that is down (the open intents, an object store's partition locks) ends the
        pass with one warning line: every view would fail the same way."""
        reports: dict[str, CompactionReport] = {}
        skipped: list[str] = []
        for view in self._store.views():
            try:
                report = compact_view(
                    self._store, view, None, self._policy, now, locks=self._locks, pending=self._pending
                )
            except Exception as exc:
                outage = database_unavailable(exc)
                if outage is not None:
                    _log.warning("offline compaction pass stopped: %s; retrying next pass", outage)
                    break
                if isinstance(exc, (FailedPrecondition, Unavailable)):
                    # The store's answer (a setup fault, a passing failure; a file that does not decode
                    # only skips its partition) names what failed: one line a pass, where a traceback
                    # read as a bug of the server.
                    _log.warning(
                        "compacting feature view %r's offline files failed: %s; retrying next pass", view, exc
                    )
                    continue
                _log.exception("compacting feature view %r's offline files failed; retrying next pass", view)
                continue
            reports[view] = report
            skipped.extend(skipped_partitions(view, report))
            if report.merged or report.deleted:
                _log.info(
                    "compacted feature view %r: %d file(s) merged into %d, %d replaced file(s) deleted",
                    view, sum(len(run.files_in) for run in report.merged), len(report.merged), report.deleted,
                )  # fmt: skip
        if skipped:
            _log.warning("offline compaction left %s", skipped_advice(skipped))
        return reports

    async def _run(self) -> None:
        while self._background.running:
            await self._background.pause(self._interval_s)
            if not self._background.running:
                break
            try:
                await asyncio.to_thread(self.run_once)
            except Exception:  # listing the store itself failed (a vanished root): next pass retries
                _log.exception("offline compaction pass failed; retrying next pass")

    def start(self) -> None:
        self._background.start(self._run())

    async def stop(self) -> None:
        await self._background.stop()


def skipped_partitions(view: str, report: CompactionReport) -> list[str]:
    """Each partition ``report`` skipped for a file that does not decode: the partition and the error."""
    return [f"feature view {view!r} v{v}/date={day.isoformat()} ({why})" for v, day, why in report.skipped]


def skipped_advice(skipped: list[str]) -> str:
    """The skipped partitions (:func:`skipped_partitions`) and what the operator must do about them: the
    log line of a background pass and of a ``CompactOfflineFiles`` call alike."""
    return (
        f"{len(skipped)} partition(s) as they were, a file in each not decoding: {'; '.join(skipped)}. "
        "Bytes that do not decode never will: move the damaged file aside or restore it from a backup, "
        "and the next pass compacts its partition"
    )
