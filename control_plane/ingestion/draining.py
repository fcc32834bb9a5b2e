"""Ingestion runs in flight when the control plane stops (``ControlPlaneServer.stop``).

A batch run (Materialize, IngestBatch) works in a worker thread, for minutes on a large source, storing
and counting it chunk by chunk. A stop cancelled its call after the server's grace (2 s): the client got
UNAVAILABLE ("Cancelling all calls"), which it retries, while the thread, which nothing cancels, went on
to store and count every row (and audit the run finished); the retry stored them all a second time.

So a stop first asks the runs to stop (``RunDrain.stop``): each one stops at its next chunk boundary,
before that chunk is written (``RunWatch.check``). A run that had counted records answers
FAILED_PRECONDITION saying what it counted and where in its source it stopped, a status clients do not
retry: with accepted rows through ``part_way``, with only quarantined ones (``StoppedAfterQuarantine``)
saying they are in the quarantine; told "stored no row" with UNAVAILABLE, such a run was retried whole
and quarantined those rows again under a new run. Only a run that had counted nothing answers UNAVAILABLE
(``ShuttingDown``), which is right to retry once the control plane is back. A run past its last chunk
(writing its online values) finishes and answers OK. The stop waits for those answers, at most
``drain_s`` (AETHER_CONTROL_PLANE_DRAIN_S), before it lets gRPC cancel what is left. A call whose run has
not answered by then (a chunk's transaction waiting for a locked database) is answered here,
FAILED_PRECONDITION naming the run and what it had counted so far, since it may still store a chunk:
never a status a client retries. Those counts and that row come from the run's ``Progress``, one record
it publishes after each chunk's commit: read from the live counters and the row the run had reached at
its chunk's start, the answer named a row a chunk behind the counts ("counted 65536 records ... before
row 0") and could catch the three counters mid-update. A call that arrives once the stop began stores
nothing and is refused UNAVAILABLE.

A replay (ReplayQuarantined) is waited for the same way; it has no chunk boundary to stop at, and its
records are claimed, so a retry never writes one twice (``service.replay``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from clients.errors import FailedPrecondition, Unavailable

T = TypeVar("T")

#: How long a stop waits for in-flight runs to answer, by default: a run stops at its next chunk
#: boundary (65,536 rows, well under a second), so this only bounds one stuck on its database. With the
#: server's grace after it, it stays inside `aetherctl dev down`'s 10 s before SIGKILL; a longer one set
#: lengthens that to match (``control_plane.cli.dev.down_grace``).
DEFAULT_DRAIN_S = 6.0
DRAIN_VARIABLE = "AETHER_CONTROL_PLANE_DRAIN_S"


@dataclass(frozen=True)
class Progress:
    """What a run had stored and counted once a chunk's transaction committed, and the rows of its source
    those chunks covered (those outside its window included): the database row's counts, with the row an
    operator resumes from. Published whole (``RunWatch.publish``), so a reader never pairs one chunk's
    counts with another's row, nor sees records_in other than accepted + quarantined."""

    run_id: str
    records_in: int = 0
    accepted: int = 0
    quarantined: int = 0
    source_rows: int = 0


class ShuttingDown(Unavailable):
    """The control plane is stopping: the run stopped at a chunk boundary. UNAVAILABLE (retry later) when
    it had counted no record; with accepted rows counted, ``part_way`` makes it FAILED_PRECONDITION saying
    what was stored."""


class StoppedAfterQuarantine(FailedPrecondition):
    """The control plane is stopping: the run stopped at a chunk boundary after it counted records, all of
    them quarantined. Not a status a client retries: they are stored in the quarantine, where they can be
    replayed, and ingesting them again would only quarantine them once more under a new run."""


class RunWatch:
    """One call's run, as its worker thread and the stop see it: the thread publishes its progress after
    every chunk's commit and stops at the next chunk boundary once the control plane is stopping."""

    def __init__(self, stopping: threading.Event) -> None:
        self._stopping = stopping
        self._lock = threading.Lock()  # the run's thread publishes, the stop's event loop reads
        self._progress: Progress | None = None  # none before its first chunk committed

    @property
    def progress(self) -> Progress | None:
        """The run's last published progress."""
        with self._lock:
            return self._progress

    def publish(self, progress: Progress) -> None:
        """After a chunk's transaction committed: what the run's counters and the database row say now."""
        with self._lock:
            self._progress = progress

    def check(self, run_id: str) -> None:
        """At a chunk boundary, before the chunk is written: once the stop began, ``ShuttingDown`` while
        the run counted no record, else FAILED_PRECONDITION (module doc)."""
        if not self._stopping.is_set():
            return
        done = self.progress or Progress(run_id)
        if done.accepted:  # part_way adds what it stored, and makes it FAILED_PRECONDITION
            raise ShuttingDown(
                f"the control plane is shutting down: run {run_id} stopped after the first"
                f" {done.source_rows} rows of its source"
            )
        if done.records_in:  # only quarantined: nothing for part_way to add, and no retryable status
            raise StoppedAfterQuarantine(
                f"the control plane is shutting down: run {run_id} stopped after the first"
                f" {done.source_rows} rows of its source, having counted {done.records_in} records (0"
                f" accepted, {done.quarantined} quarantined). They are stored in the quarantine (`aetherctl"
                " quarantine list`), where they can be replayed; do not ingest those rows again: ingest"
                " only the rest of the source"
            )
        raise ShuttingDown(
            f"the control plane is shutting down: run {run_id} stopped before it counted any record;"
            " ingest the source again once the control plane is back"
        )


#: A watch that never stops its run (a run outside a server: tests, tools).
UNWATCHED = RunWatch(threading.Event())


class RunDrain:
    """The ingestion runs of one control plane in flight, for its stop (module doc)."""

    def __init__(self, drain_s: float = DEFAULT_DRAIN_S) -> None:
        self._drain_s = drain_s
        self._stopping = threading.Event()  # read by the runs' threads
        self._running: set[asyncio.Future[None]] = set()  # one per call, done once it answered
        self._give_up = asyncio.Event()

    async def run(self, work: Callable[[RunWatch], T], what: str) -> T:
        """``work(watch)`` in a worker thread, answered as the module doc says; ``what``: the call, for
        a refusal."""
        if self._stopping.is_set():
            raise Unavailable(f"the control plane is shutting down; {what} was not started: try again")
        watch = RunWatch(self._stopping)
        answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._running.add(answered)
        worker = asyncio.ensure_future(asyncio.to_thread(work, watch))
        giving_up = asyncio.ensure_future(self._give_up.wait())
        try:
            await asyncio.wait({worker, giving_up}, return_when=asyncio.FIRST_COMPLETED)
            if worker.done():
                return worker.result()
            raise FailedPrecondition(self._unfinished(watch, what))
        finally:
            giving_up.cancel()
            self._running.discard(answered)
            answered.set_result(None)

    def stop(self) -> asyncio.Future[None]:
        """Asks every run to stop at once (no new one starts), and returns what waits, at most
        ``drain_s``, for their calls to answer; those that have not by then are answered as unfinished."""
        self._stopping.set()
        return asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        if self._running:
            await asyncio.wait(set(self._running), timeout=self._drain_s)
        self._give_up.set()
        if self._running:  # each answers at once now
            await asyncio.wait(set(self._running))

    def _unfinished(self, watch: RunWatch, what: str) -> str:
        done = watch.progress  # one record: its counts and row agree with each other and the database row
        if done is None:
            return (
                f"the control plane is shutting down and {what} did not end within {self._drain_s:g}s"
                f" ({DRAIN_VARIABLE}); it may have stored rows, so do not repeat it before the audit log"
                " (`aetherctl audit list`) or the quarantine (`aetherctl quarantine list`) shows what it"
                " stored"
            )
        return (
            f"the control plane is shutting down and run {done.run_id} did not stop within"
            f" {self._drain_s:g}s ({DRAIN_VARIABLE}): it had stored and counted {done.records_in} records"
            f" ({done.accepted} accepted, {done.quarantined} quarantined) before row"
            f" {done.source_rows} of its source and may store one more chunk; do not ingest the source"
            f" again before the run's last `ingestion.batch` audit entry (`aetherctl audit list`) shows"
            " what it counted, then only the rest of it"
        )
