"""A batch run's chunk transaction, and the chunk's offline files when that transaction fails (a replay's
batch group commits through it too: its counter is its replay run's, 0 before the group).

A chunk's accepted rows are written to the offline store first, then counted in one SQL transaction
(``batch``). When that transaction failed (the database down, a serialization failure, a lock wait cut
off) the files stayed in the store, read by every point-in-time join and training set, while no run
counted their rows: records in no longer added up to accepted + quarantined. Now the transaction runs
under :func:`chunk_transaction`, which removes the files before the error goes on, once it knows the
transaction did not commit:

* A failure before COMMIT (beginning the transaction, or any statement, flushed before the COMMIT is
  sent) rolls the transaction back: the files are removed at once.
* A failure at COMMIT (the connection lost while committing) leaves the outcome unknown: the database
  may have committed before the client lost its reply. The files are then removed only once the
  outcome is read back: the run's ``accepted`` counter, which only the run itself moves and each chunk's
  transaction moves by the chunk's accepted rows, is either what the run counted before the chunk (not
  committed: removed) or that plus the chunk's rows (committed: kept, counted and named by the run's
  online part, which the run hands to the next replay). On PostgreSQL the read waits first until the
  old connection's server process is no longer running a statement (``pg_stat_activity``), so a COMMIT
  still in progress there is not read as one that never happened. When neither can be read within
  ``RESOLVE_WITHIN_S`` (the database still down), the files stay, and so does the chunk's intent
  (``intents``): the recovery pass settles them once the intent's lease has lapsed, removing the files
  if the intent is still there (the COMMIT did not land) and keeping them if it is gone (it did, and
  deleted the intent with the rows it counted). Deleting rows a committed chunk counts would break the
  counts the other way, so the run never guesses.

The chunk's intent (``ChunkFiles.intent``, committed before its offline write) is deleted in the chunk's
transaction, first, conditionally (``intents.settle_in``): an intent the recovery took refuses the chunk
(``IntentLost``) before it counts anything, and its files go as for any failure before COMMIT. A chunk
found not committed has its intent dropped once its files are removed. The read-back above still
settles a lost COMMIT at once when the database answers; the intent covers what the read-back could
not: a run killed between its offline write and its commit, and an outcome that cannot be read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import pyarrow as pa
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db import read_session, write_session
from control_plane.ingestion.intent_lease import IntentLease
from control_plane.ingestion.intents import Intent, drop, settle_in
from control_plane.ingestion.tables import IngestionRunRow
from control_plane.offline.store import OfflineStore

#: How long a run whose chunk failed at COMMIT keeps trying to read whether it committed.
RESOLVE_WITHIN_S = 10.0

_log = logging.getLogger("aether.ingestion.batch")


@dataclass
class ChunkFiles:
    """One chunk's offline files, their intent and what its transaction adds to the run's ``accepted``
    counter; ``committed`` is what a failed transaction's outcome was found to be (None: not known),
    ``removed`` whether its files are gone since."""

    run_id: str
    counted_before: int  # the run's accepted counter before the chunk
    adding: int  # the chunk's accepted rows
    paths: Sequence[str]
    intent: Intent | None = None  # committed before the files were written (``intents.announce``)
    committed: bool | None = field(default=None, init=False)
    at_commit: bool = field(default=False, init=False)  # its transaction failed at COMMIT
    removed: bool = field(default=False, init=False)
    lease: IntentLease | None = field(default=None, init=False)  # renews ``intent`` (``intent_lease``)

    def write(self, offline: OfflineStore, table: pa.Table, lease: IntentLease) -> list[str]:
        """Writes the chunk's ``table`` under ``lease`` (its intent announced first, then renewed until
        :func:`chunk_transaction` ends); sets the paths and the intent, and returns the paths."""
        self.lease = lease
        try:
            self.paths = lease.write(offline, table)
        finally:  # a write that failed after its announce leaves its intent to the recovery
            self.intent = lease.intent
        return list(self.paths)

    def stop_renewing(self) -> None:
        """Stops renewing the chunk's intent (its transaction ended, or the run failed before it)."""
        if self.lease is not None:
            self.lease.stop()


@contextmanager
def chunk_transaction(
    sessions: sessionmaker[Session],
    files: ChunkFiles,
    remove: Callable[[Sequence[str]], bool],
    resolve_within_s: float | None = None,
) -> Iterator[Session]:
    """``write_session`` for a chunk's transaction, which deletes the chunk's intent first; when it fails,
    ``remove``s the chunk's files if it did not commit (module doc) and lets the error go on. Nothing
    here hides that error. ``resolve_within_s``: None is ``RESOLVE_WITHIN_S``."""
    at_commit = False
    backend: int | None = None
    within_s = RESOLVE_WITHIN_S if resolve_within_s is None else resolve_within_s
    try:
        with write_session(sessions) as session:
            if files.intent is not None:
                settle_in(session, files.intent)  # counted with the rows, or IntentLost: nothing counted
            yield session
            session.flush()  # every statement runs before the COMMIT: a failure so far rolls back
            backend = _backend_pid(session)
            at_commit = True
    except BaseException:
        files.stop_renewing()  # settled, or left to the recovery: either way no longer this run's to hold
        files.at_commit = at_commit  # with ``committed`` None: the outcome could not be read back
        if files.paths:
            try:
                _settle_files(sessions, files, remove, at_commit, backend, within_s)
            except Exception:
                _log.exception(
                    "run %s: could not settle the offline files of its failed chunk %s",
                    files.run_id, list(files.paths),
                )  # fmt: skip
        raise
    # Out of the transaction: on SQLite a renewal may be waiting for its write lock meanwhile.
    files.stop_renewing()


def _settle_files(
    sessions: sessionmaker[Session],
    files: ChunkFiles,
    remove: Callable[[Sequence[str]], bool],
    at_commit: bool,
    backend: int | None,
    resolve_within_s: float,
) -> None:
    files.committed = _committed(sessions, files, backend, resolve_within_s) if at_commit else False
    if files.committed is None:
        _log.error(
            "run %s: its chunk's transaction failed at COMMIT and whether it committed could not be read"
            " back; its offline files %s stay until the intent recovery settles them once the lease has"
            " lapsed (kept if the chunk committed, else removed)", files.run_id, list(files.paths),
        )  # fmt: skip
    elif files.committed:
        _log.warning(
            "run %s: its chunk's transaction failed at COMMIT but had committed; its offline files %s"
            " are counted and stay", files.run_id, list(files.paths),
        )  # fmt: skip
    elif remove(files.paths):
        files.removed = True
        if files.intent is not None:
            drop(sessions, files.intent)  # else the recovery removes them again and drops it
        _log.warning(
            "run %s: its chunk's transaction did not commit; its offline files %s were removed",
            files.run_id, list(files.paths),
        )  # fmt: skip


def _committed(
    sessions: sessionmaker[Session], files: ChunkFiles, backend: int | None, within_s: float
) -> bool | None:
    """Whether a chunk's transaction that failed at COMMIT committed, read back from the run's counter;
    None when it cannot be read within ``within_s``, or reads neither value."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            with read_session(sessions) as session:
                # A COMMIT still in progress on the old connection's server process: read again later.
                running = backend is not None and _still_running(session, backend)
                query = select(IngestionRunRow.accepted).where(IngestionRunRow.run_id == files.run_id)
                counted = None if running else session.scalar(query)
        except Exception as exc:  # the database is out of reach: try again until the deadline
            _log.info("run %s: cannot read back its chunk's outcome yet (%s)", files.run_id, exc)
        else:
            if not running:
                if counted is None or counted == files.counted_before:
                    return False
                return True if counted == files.counted_before + files.adding else None
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


def _backend_pid(session: Session) -> int | None:
    """The PostgreSQL server process of the session's connection (psycopg), else None."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    driver = session.connection().connection.dbapi_connection
    pid = getattr(getattr(driver, "info", None), "backend_pid", None)
    return pid if isinstance(pid, int) else None


def _still_running(session: Session, backend: int) -> bool:
    """Whether PostgreSQL server process ``backend`` is still running a statement (its COMMIT); never when
    it is the session's own (the old connection was not lost, and the pool lent it again)."""
    query = text("SELECT state FROM pg_stat_activity WHERE pid = :pid AND pid <> pg_backend_pid()")
    state = session.scalar(query, {"pid": backend})
    return bool(state == "active")
