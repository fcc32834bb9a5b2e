"""A writer's hold on its intent (``intents``) while it writes the files the intent names and counts
them: announced, then renewed on a thread of its own until the writer stops it.

An intent's stamp is its lease: a recovery pass takes an intent whose stamp is older than the lease
(``claim_lease_s``, 5 minutes) and removes its files. Unrenewed, a healthy chunk (a batch run's, a
replay's group, a stream outbox drain) whose write and commit took longer than that was refused at its
commit and its files removed, so a large ingestion failed however alive its writer was. Now the writer
renews it (:func:`intents.renew`: the stamp moved to the database's now, as the announce and the
recovery read that clock) every ``renew_every_s`` (a third of the lease by default) from the announce
until :meth:`IntentLease.stop`, which the writer calls once its counting transaction has ended (or its
write failed): an intent outlives its lease only when its writer is dead or stalled past it.

A renewal that finds the intent no longer ``writing`` (a recovery pass took it: the writer stalled past
the lease, or the database was out of reach for that long) marks the lease lost and renews no more; once
its write returns, the writer removes the files it wrote (the recovery removed those it found, and
would never find those written after it) and fails with :class:`intents.IntentLost`, before its counting
transaction, nothing of the chunk stored or counted. (A loss no renewal saw yet refuses the transaction
itself, ``intents.settle_in``.) A renewal that fails (the database out of reach) is retried at the next
beat.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import pyarrow as pa
from sqlalchemy.orm import Session, sessionmaker

from control_plane.ingestion import intents
from control_plane.ingestion.claims import CLAIM_LEASE_S
from control_plane.offline.data_files import remove_data_files
from control_plane.offline.store import OfflineStore

_log = logging.getLogger("aether.ingestion.intents")


class IntentLease:
    """The intent of one chunk's files (``run_id``, ``view`` version ``version``, chunk ``chunk``), renewed
    every ``renew_every_s`` (None: a third of ``lease_s``) from :meth:`announce` to :meth:`stop`."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        run_id: str,
        view: str,
        version: int,
        chunk: int,
        lease_s: float = CLAIM_LEASE_S,
        renew_every_s: float | None = None,
    ) -> None:
        self._sessions = sessions
        self._run_id = run_id
        self._view = view
        self._version = version
        self._chunk = chunk
        self._every = renew_every_s if renew_every_s is not None else lease_s / 3
        self.intent: intents.Intent | None = None
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def write(self, offline: OfflineStore, table: pa.Table) -> list[str]:
        """``offline.write`` of ``table`` under this lease, its paths announced first. Renewals stop when
        the write fails (nothing is left to renew for); a write during which the lease was lost removes
        its files and raises :class:`intents.IntentLost` (:meth:`check`)."""
        try:
            paths = offline.write(self._view, self._version, table, announce=self.announce)
            self.check()
        except intents.IntentLost:
            self.stop()
            self._remove(offline)
            raise
        except BaseException:
            self.stop()
            raise
        return paths

    def announce(self, paths: Sequence[str]) -> None:
        """Commits the intent (``intents.announce``) and starts renewing it."""
        self.intent = intents.announce(
            self._sessions, self._run_id, self._view, self._version, self._chunk, paths
        )
        self._thread = threading.Thread(target=self._renew, name=f"intent-{self._run_id}", daemon=True)
        self._thread.start()

    @property
    def lost(self) -> bool:
        """Whether a renewal found the intent taken by a recovery pass."""
        return self._lost.is_set()

    def check(self) -> None:
        """:class:`intents.IntentLost` once a renewal found the intent taken by a recovery pass."""
        if self._lost.is_set() and self.intent is not None:
            raise intents.IntentLost(
                f"run {self._run_id}: the intent of its chunk's offline files {list(self.intent.paths)} was"
                " taken by the intent recovery while the chunk was being written (no renewal reached the"
                " database for a lease: the writer stalled, or the database was out of reach); its files are"
                " removed, and nothing of the chunk is stored or counted"
            )

    def stop(self) -> None:
        """Stops renewing: once the chunk's transaction ended (the intent is settled, or left for the
        recovery), or its write failed. Never called inside that transaction: on SQLite a renewal may be
        waiting for its write lock."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _remove(self, offline: OfflineStore) -> None:
        # The recovery that took the intent removed the files it found; those written after it are named
        # by no intent any more, so nothing but this writer would ever remove them.
        paths = list(self.intent.paths) if self.intent is not None else []
        try:
            remove_data_files(offline.filesystem, paths)
        except Exception:  # logged; the IntentLost goes on
            _log.exception(
                "run %s: could not remove the offline files %s of its lost intent", self._run_id, paths
            )

    def _renew(self) -> None:
        intent = self.intent
        while intent is not None and not self._stop.wait(self._every):
            try:
                renewed = intents.renew(self._sessions, intent)
            except Exception as exc:  # the database out of reach: the next beat tries again
                _log.warning("run %s: could not renew the intent of its offline files: %s", self._run_id, exc)
                continue
            if not renewed:  # taken by a recovery pass, or settled by the chunk's commit just now
                if not self._stop.is_set():
                    self._lost.set()
                return
