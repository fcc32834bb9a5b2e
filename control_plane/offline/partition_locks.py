"""The lock a compaction pass holds on one date partition, so that two passes (the background loop and
``aetherctl offline compact``, or two control planes on one store) never merge overlapping runs: two
merged files naming the same sources would each be read, and their rows twice.

Each lock is taken without waiting, and is gone with the process that held it (a dead pass never
blocks the next one):

* a local root: ``flock`` on a ``.compact.lock`` file in the partition folder itself
  (:func:`folder_lock`), which every process that can reach the folder shares;
* an object-store root has no such file lock, so the metadata database holds it
  (:class:`DatabaseLocks`): on PostgreSQL a session advisory lock on a connection kept for the pass
  (released when the pass ends, or when its connection dies with the process); on SQLite, whose
  every user shares one host, ``flock`` on one of 256 lock files beside the database file (two
  partitions that share a file just take turns; a pass skips what it finds held, and the next pass
  comes back to it). The key is the partition's path (bucket and prefix included), not the root's
  URI, which may spell one bucket many ways (credentials, options, a trailing slash).

A held lock is a :class:`Held`: a pass calls :meth:`Held.confirm` before each step readers can see. A
file lock cannot be lost while its file is open; an advisory lock goes with its connection, so the
confirmation is a round trip on that connection, which fails if it died (and the lock with it)
instead of letting the pass publish or delete without it.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import DBAPIError


class Held:
    """A partition lock this pass holds. ``confirm`` raises when it can no longer be sure it does."""

    def __init__(self, confirm: Callable[[], object] | None = None) -> None:
        self._confirm = confirm

    def confirm(self) -> None:
        if self._confirm is not None:
            self._confirm()


#: Holds the named partition's lock for the ``with`` block; yields None (holding nothing) when another
#: pass has it.
PartitionLock = Callable[[str], AbstractContextManager[Held | None]]
_LOCK_NAME = ".compact.lock"
_log = logging.getLogger("aether.offline.compaction")
#: Lock files beside a SQLite database: partitions hash into this many.
SQLITE_LOCK_FILES = 256


@contextmanager
def folder_lock(partition: str) -> Iterator[Held | None]:
    """The lock of a partition of a local root: ``flock`` on a file in its folder."""
    with _flocked(f"{partition}/{_LOCK_NAME}") as held:
        yield held


@contextmanager
def _flocked(path: str) -> Iterator[Held | None]:
    # flock, not fcntl's record locks: those belong to the process, so the loop's thread and an RPC's
    # thread would both "hold" one; an flock belongs to the open file.
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        yield Held()
    finally:
        os.close(descriptor)  # releases the lock


class DatabaseLocks:
    """Partition locks kept by the metadata database (module doc), keyed by the partition's path."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        database = engine.url.database or ""
        self._sqlite_folder: Path | None = None
        self._in_memory: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()
        if engine.dialect.name == "sqlite" and database not in ("", ":memory:"):
            self._sqlite_folder = Path(database).with_name(Path(database).name + ".compact-locks")

    def __call__(self, partition: str) -> AbstractContextManager[Held | None]:
        key = int.from_bytes(hashlib.sha256(partition.encode()).digest()[:8], "big", signed=True)
        if self._engine.dialect.name == "postgresql":
            return self._advisory(key)
        if self._sqlite_folder is not None:
            self._sqlite_folder.mkdir(mode=0o700, exist_ok=True)
            return _flocked(str(self._sqlite_folder / f"{key % SQLITE_LOCK_FILES:03d}.lock"))
        return self._process_local(key)  # an in-memory database: no other process can share it

    @contextmanager
    def _advisory(self, key: int) -> Iterator[Held | None]:
        with self._engine.connect() as connection:
            held = bool(connection.execute(select(func.pg_try_advisory_lock(key))).scalar_one())
            connection.commit()  # the lock is the session's; the pass must not hold a transaction open

            def alive() -> None:
                # The session still answers, so its lock still stands (only this pass unlocks it); a
                # dead connection raises here, and the pass stops before its next visible step.
                connection.execute(select(1))
                connection.commit()

            if not held:
                yield None
                return
            try:
                yield Held(alive)
            finally:
                if not connection.invalidated:  # a connection that died took its session's lock along
                    _unlock(connection, key)

    @contextmanager
    def _process_local(self, key: int) -> Iterator[Held | None]:
        with self._guard:
            lock = self._in_memory.setdefault(key, threading.Lock())
        if not lock.acquire(blocking=False):
            yield None
            return
        try:
            yield Held()
        finally:
            lock.release()


def _unlock(connection: Connection, key: int) -> None:
    """Releases the advisory lock, never raising over what ended the pass: if the unlock fails (the
    connection died unnoticed, or a failed statement left its transaction aborted) the connection is
    invalidated, which ends its session and so its lock, rather than going back to the pool holding it."""
    try:
        connection.rollback()
        connection.execute(select(func.pg_advisory_unlock(key)))
        connection.commit()
    except DBAPIError as exc:
        _log.warning("releasing a compaction lock failed (%s); closing its connection releases it", exc)
        connection.invalidate()
