"""A batch run's hold on its online part (``online_pending``): filing it, naming each chunk's offline
files in it, renewing it while the run works, and settling it.

A replay takes over an ``online_pending`` record whose hold is older than the lease (``claim_lease_s``,
5 minutes), as it takes over a dead replay's claim. The run renewed its hold only in each chunk's
transaction, so a chunk whose work (reading a slow source, validating, writing the offline store)
outlasted the lease lost it to a replay of the run's records: the replay wrote the online values of
the files named so far and marked the record replayed, and the files the run stored after that were
named by no record, so when the run then failed (its source unreadable part-way, the online store
down, the process killed) their rows stayed stored and counted with no online value and nothing
saying so.

Now the run renews its hold every third of the lease on a thread of its own (started by :meth:`RunHold.adopt`)
from the moment it is filed until the run settles it, so a live run keeps it. A run that loses it all
the same (stalled past the lease: the process paused, the database out of reach for longer) finds out
at its next chunk's commit, when naming the chunk's files in the record changes no row; it then files
the files written since the record was last named, in the same transaction, in a new record of the
run (``online.2``, …) that it holds in its place. The replay that took the first one writes the files
that one names; online writes never replace a fresher value, so the two records complete in any order.
Every stored and counted row is named by a record held by the run or by a replay until its online
value is written; no row is stored or counted twice (a record names files, it stores nothing).

A renewal whose transaction committed but whose answer was lost (the connection dropped after COMMIT
reached the database) leaves the record at a stamp the run never heard of: the run keeps that stamp as
unconfirmed (:attr:`RunHold._unconfirmed`) and its next renewal, or its next chunk, tries it after the
stamp it knows, so such a renewal is not taken for a replay's takeover (which filed the later chunks in
a record of their own and left the first one pending for good, held by nobody).

Lock order: the thread renews under :attr:`RunHold.lock`, and the run holds the lock around each
chunk's transaction, so the two never write the record at once (on SQLite the thread would otherwise
wait on the run's write transaction while the run waited on the thread).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from control_plane.db import write_session
from control_plane.ingestion.online_pending import (
    extend_online_part,
    file_online_part,
    online_part_key,
    renew_online_part,
    settle_online_part,
)
from control_plane.ingestion.quarantine import RunSource, now_us

_log = logging.getLogger("aether.ingestion.batch")


@dataclass(frozen=True)
class Named:
    """What a chunk's transaction did to the run's online part; the hold adopts it once that commits."""

    stamp: int
    number: int  # the record's number among the run's online parts (1: the first)
    first: int  # the index, in the run's offline files, of the first file the record names
    named: int  # how many of the run's offline files are named by its records now


class RunHold:
    """The run's hold on its current online part: ``stamp`` is 0 before it is filed."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        run: RunSource,
        lease_s: float,
        renew_every_s: float | None = None,
    ) -> None:
        self._sessions = sessions
        self._run = run
        self._every = renew_every_s if renew_every_s is not None else lease_s / 3
        self.lock = threading.Lock()
        self.stamp = 0
        self._number = 0
        self._first = 0
        self._named = 0
        self._lost = False
        # The stamp of a renewal whose outcome is unknown (its commit may have landed with its answer
        # lost); 0 when none.
        self._unconfirmed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def key(self) -> str:
        return online_part_key(max(self._number, 1))

    def name_files(self, session: Session, offline_paths: Sequence[str]) -> Named:
        """Names every offline file of the run in its online part, in the caller's transaction (a
        chunk's, under :attr:`lock`): the first chunk files it; a later one extends it and renews the
        hold; one that finds it taken over files the files not yet named in a new record (module doc).
        :meth:`adopt` the result once the transaction commits."""
        run_id = self._run.run_id
        if self.stamp and not self._lost:
            for stamp in self._stamps():
                renewed = extend_online_part(session, run_id, stamp, offline_paths[self._first :], self.key)
                if renewed:
                    return Named(renewed, self._number, self._first, len(offline_paths))
        if self.stamp:
            _log.warning(
                "batch run %s lost its hold on its online part %s to a replay (no renewal for a lease); the"
                " files it stored since go in a new record", run_id, self.key,
            )  # fmt: skip
        number, first = self._number + 1, self._named
        stamp = file_online_part(session, self._run, offline_paths[first:], online_part_key(number))
        return Named(stamp, number, first, len(offline_paths))

    def adopt(self, named: Named) -> None:
        """Takes up what :meth:`name_files` did once its transaction committed, and starts renewing the
        hold. (A renewal between the commit and this, by the stamp before, finds nothing and marks the
        hold lost; this sets the committed stamp and clears that.)"""
        with self.lock:
            self.stamp, self._number, self._first = named.stamp, named.number, named.first
            self._named, self._lost, self._unconfirmed = named.named, False, 0
        if self._thread is None:
            self._thread = threading.Thread(target=self._renew, name=f"hold-{self._run.run_id}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stops renewing (before the run settles its record, or when the run ends)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def settle(self, error: str | None = None) -> None:
        """Ends the run's hold (``settle_online_part``): the record goes once its online values are
        written (``error`` None), else it is handed to the next replay at once. Nothing when nothing was
        filed or a replay holds it now (the statement is conditional on the hold's stamp)."""
        self.stop()
        if not self.stamp or self._lost:
            return
        with write_session(self._sessions) as session:
            self.settle_in(session, error)

    def settle_in(self, session: Session, error: str | None = None) -> None:
        """:meth:`settle` in the caller's transaction (the run's ``finished`` one), renewals stopped."""
        self.stop()
        if self.stamp and not self._lost:
            for stamp in self._stamps():
                if settle_online_part(session, self._run.run_id, stamp, error, self.key):
                    break

    def _renew(self) -> None:
        while not self._stop.wait(self._every):
            with self.lock:
                if self._stop.is_set() or not self.stamp or self._lost:
                    continue
                attempt = now_us()
                try:
                    with write_session(self._sessions) as session:
                        renewed = self._renew_in(session, attempt)
                except Exception:  # the database is out of reach: the next beat tries again
                    self._unconfirmed = attempt  # it may have committed all the same (module doc)
                    _log.exception("could not renew batch run %s's hold on its online part", self._run.run_id)
                    continue
                self._unconfirmed = 0
                if renewed:
                    self.stamp = renewed
                else:
                    self._lost = True  # taken over: the next chunk files its files in a new record

    def _stamps(self) -> tuple[int, ...]:
        """The stamps the record may be at: the one last confirmed, then an unconfirmed renewal's."""
        return (self.stamp, self._unconfirmed) if self._unconfirmed else (self.stamp,)

    def _renew_in(self, session: Session, attempt: int) -> int:
        for stamp in self._stamps():
            renewed = renew_online_part(session, self._run.run_id, stamp, self.key, attempt)
            if renewed:
                return renewed
        return 0
