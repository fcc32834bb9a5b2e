"""Engine and session factory for the metadata database.

SQLite (the embedded default) gets WAL mode, so readers never block the writer; a busy timeout, so
concurrent writers wait for the lock instead of failing; and foreign keys, which SQLite leaves off.
Write transactions start with ``BEGIN IMMEDIATE``: a deferred transaction that reads first and writes
later cannot wait for the lock when another writer committed in between (SQLite reports "database is
locked" at once), whereas an immediate one takes the write lock up front and queues behind the busy
timeout.

Connections: a thread holds at most one at a time; no code opens a session while its thread has one
open. (A deployment's write once checked the model version in a session of its own while it held the
lock: with writers queued behind that lock holding every other pooled connection, it waited the pool's
30 s and failed.) A control plane also keeps a connection for each thread that can use the database
(:func:`pool_size_for`), so that no thread waits for one at all."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.orm import Session, sessionmaker

from clients.errors import InvalidArgument
from clients.files import make_private, open_private, private_folder

# Execution option a connection carries when its transaction will write.
_WRITE_OPTION = "aether_write"


#: Threads of a control plane that use the database besides its executor's workers: the event loop's
#: own (at start and stop) and the jobs supervisor's.
OTHER_DATABASE_THREADS = 2


def pool_size_for(worker_threads: int) -> int:
    """The connections a control plane keeps when its executor has ``worker_threads`` threads: one for
    every thread that can use the database at once (each holds at most one)."""
    return worker_threads + OTHER_DATABASE_THREADS


def create_db_engine(url: str, busy_timeout_s: float = 30.0, pool_size: int | None = None) -> Engine:
    """An engine for ``url``; for SQLite files, creates the parent folder and configures the connection.
    ``pool_size``: the connections the pool keeps (None: SQLAlchemy's 5). SQLAlchemy's overflow of up to
    10 more stays on top of it, as room for threads of a program that embeds a control plane."""
    parsed = make_url(url)
    pool: dict[str, Any] = {} if pool_size is None else {"pool_size": pool_size}
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(url, pool_pre_ping=True, **pool)
    else:
        if parsed.database and parsed.database != ":memory:":
            _create_private_file(Path(parsed.database).expanduser(), parsed.query.get("uri"))
        else:
            pool = {}  # an in-memory database keeps one connection per thread, not a queue of them
        engine = create_engine(url, connect_args={"timeout": busy_timeout_s}, **pool)
        _configure_sqlite(engine, busy_timeout_s)
    _refuse_nul_characters(engine)
    return engine


def _create_private_file(path: Path, uri: object) -> None:
    """Creates the SQLite file (and its missing folders, 0700) with mode 0600 before SQLite opens it, which
    would create it with the umask's 0644: the database holds job specs with their secrets, webhook URLs
    and quarantined records. SQLite gives the -wal and -shm files it creates the mode of the database
    file, so they are 0600 too. An existing file made before that (0644 from the umask), and its -wal and
    -shm files, lose the group's and others' permissions (:func:`clients.files.make_private`): it is
    Aether's database, whoever made the folder it is in. A ``uri=true`` database name is a URI, not a
    path, and is left to SQLite."""
    if uri not in (None, "", "false", "0"):
        return
    private_folder(path.parent)
    os.close(open_private(path, os.O_WRONLY))
    for made in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        make_private(made)


def _refuse_nul_characters(engine: Engine) -> None:
    """Text holding a NUL character (0x00) is refused with INVALID_ARGUMENT before any statement runs.
    PostgreSQL cannot store it in a text column (the driver's DataError would reach the caller as
    INTERNAL) and SQLite would store it, so without this the same request succeeded on one backend and
    failed on the other. One check for every write and every lookup, whichever API a value came from
    (names, descriptions, parameters, filters, page tokens)."""

    @event.listens_for(engine, "before_cursor_execute")
    def _check(
        _connection: Connection, _cursor: Any, _statement: str, parameters: Any, _context: Any, many: bool
    ) -> None:
        for row in parameters if many else (parameters,):
            values: Iterable[Any]
            if isinstance(row, Mapping):
                values = row.values()
            elif isinstance(row, list | tuple):
                values = row
            else:  # one value (a driver's executemany of single values)
                values = (row,)
            for value in values:
                if type(value) is str and "\x00" in value:
                    shown = value[:40].replace("\x00", "\\x00")
                    raise InvalidArgument(
                        f"the text {shown!r} holds a NUL character (0x00), which cannot be stored or "
                        "looked up; remove it"
                    )


def _switch_to_wal(cursor: Any, busy_timeout_s: float) -> None:
    """``PRAGMA journal_mode=WAL``, retried while the database is locked, for up to ``busy_timeout_s``.
    Two processes opening a new database file at once both try to switch it to WAL; SQLite sees the two
    lock upgrades as a deadlock and answers one of them "database is locked" at once, without waiting
    in its busy handler (about half the time when two control planes start together), and that one
    failed to start."""
    deadline = time.monotonic() + busy_timeout_s
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _configure_sqlite(engine: Engine, busy_timeout_s: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            _switch_to_wal(cursor, busy_timeout_s)
            cursor.execute("PRAGMA foreign_keys=ON")
            # In WAL mode NORMAL loses no committed data on a process crash, only on power loss.
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        writes = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")


def create_session_factory(engine: Engine) -> sessionmaker[Session]:
    # Rows are converted to messages inside the transaction; nothing needs reloading after commit.
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def write_session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose transaction takes the write lock at its start, commits on success and rolls back
    on any exception."""
    with sessions.begin() as session:
        session.connection(execution_options={_WRITE_OPTION: True})
        yield session


#: A read transaction on PostgreSQL: its default, READ COMMITTED, gives each statement a snapshot of its
#: own, so a reader of a revision and then of the content saw a commit in between (a watcher got revision
#: N with N+1's content). REPEATABLE READ keeps the first statement's snapshot to the end, and a read-only
#: transaction at that level never fails with a serialization error. SQLite needs nothing: a WAL read
#: transaction already keeps the snapshot of its first read.
_POSTGRESQL_READS = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}


@contextmanager
def read_session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A session for reads: one consistent snapshot of the database (on PostgreSQL a read-only REPEATABLE
    READ transaction), rolled back at the end. Writes belong in :func:`write_session`."""
    with sessions() as session:  # autobegins on first use; closing rolls back
        if session.get_bind().dialect.name == "postgresql":
            # Options of the connection this transaction checks out; SQLAlchemy resets them when the
            # connection goes back to the pool, so write sessions keep READ COMMITTED.
            session.connection(execution_options=_POSTGRESQL_READS)
        yield session


def write_connection(engine: Engine) -> Connection:
    """A connection whose transactions take the write lock at their start (for migrations)."""
    return engine.connect().execution_options(**{_WRITE_OPTION: True})
