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
  comes back to it).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from sqlalchemy import Engine, func, select

#: Holds the named partition's lock for the ``with`` block; yields False (holding nothing) when another
#: pass has it.
PartitionLock = Callable[[str], AbstractContextManager[bool]]
_LOCK_NAME = ".compact.lock"
#: Lock files beside a SQLite database: partitions hash into this many.
SQLITE_LOCK_FILES = 256


@contextmanager
def folder_lock(partition: str) -> Iterator[bool]:
    """The lock of a partition of a local root: ``flock`` on a file in its folder."""
    with _flocked(f"{partition}/{_LOCK_NAME}") as held:
        yield held


@contextmanager
def _flocked(path: str) -> Iterator[bool]:
    # flock, not fcntl's record locks: those belong to the process, so the loop's thread and an RPC's
    # thread would both "hold" one; an flock belongs to the open file.
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(descriptor)  # releases the lock


class DatabaseLocks:
    """Partition locks kept by the metadata database (module doc), for an object-store root ``root``:
    the root is part of each lock's key, so two stores on one database do not share locks."""

    def __init__(self, engine: Engine, root: str) -> None:
        self._engine = engine
        self._root = root
        database = engine.url.database or ""
        self._sqlite_folder: Path | None = None
        self._in_memory: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()
        if engine.dialect.name == "sqlite" and database not in ("", ":memory:"):
            self._sqlite_folder = Path(database).with_name(Path(database).name + ".compact-locks")

    def __call__(self, partition: str) -> AbstractContextManager[bool]:
        key = int.from_bytes(
            hashlib.sha256(f"{self._root}\0{partition}".encode()).digest()[:8], "big", signed=True
        )
        if self._engine.dialect.name == "postgresql":
            return self._advisory(key)
        if self._sqlite_folder is not None:
            self._sqlite_folder.mkdir(mode=0o700, exist_ok=True)
            return _flocked(str(self._sqlite_folder / f"{key % SQLITE_LOCK_FILES:03d}.lock"))
        return self._process_local(key)  # an in-memory database: no other process can share it

    @contextmanager
    def _advisory(self, key: int) -> Iterator[bool]:
        with self._engine.connect() as connection:
            held = bool(connection.execute(select(func.pg_try_advisory_lock(key))).scalar_one())
            connection.commit()  # the lock is the session's; the pass must not hold a transaction open
            if not held:
                yield False
                return
            try:
                yield True
            finally:
                connection.execute(select(func.pg_advisory_unlock(key)))
                connection.commit()

    @contextmanager
    def _process_local(self, key: int) -> Iterator[bool]:
        with self._guard:
            lock = self._in_memory.setdefault(key, threading.Lock())
        if not lock.acquire(blocking=False):
            yield False
            return
        try:
            yield True
        finally:
            lock.release()
