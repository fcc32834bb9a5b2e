"""A batch run whose chunk transaction fails, on SQLite and on PostgreSQL with a real redis-server and
offline store (``chunk_commit``): a failure before COMMIT (a real lock wait cut off: another writer
holds SQLite's write lock, or the run's row on PostgreSQL) leaves none of the chunk's files in the store;
a failure at COMMIT leaves them iff the chunk committed: a clearly named fake, :class:`FailsOneCommit`,
fails one COMMIT after or before the database commits (no real fault loses only a COMMIT's reply), and on
PostgreSQL a real one terminates the chunk's server process right before its COMMIT. Either way the rows
the store holds are the rows the runs count accepted, and every file a run's online part names is stored.
A replay's batch group whose commit fails (a real lock wait cut off) removes its files too and hands its
records back."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import grpc
import pyarrow as pa
import pytest
import redis
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.errors import AetherError, FailedPrecondition, Internal
from control_plane.db import create_db_engine, create_session_factory, read_session, upgrade_to_head
from control_plane.features.registry import FeatureRegistry
from control_plane.ingestion import quarantine
from control_plane.ingestion.batch import BatchMaterializer
from control_plane.ingestion.service import IngestionService
from control_plane.ingestion.tables import IngestionRunRow
from control_plane.offline.store import OfflineStore
from tests.integration.ingestion.conftest import CLIMATE, ENTITY, RegistryDb, registry_on
from tests.support.postgres_server import PostgresServer

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)  # every chunk in one partition (one day)
SENSORS = (801, 802, 803)


def chunk(k: int) -> pa.Table:
    """Chunk ``k``: one accepted row per sensor and one rejected row (too hot)."""
    return pa.table(
        {
            "sensor_id": [*SENSORS, 899],
            "event_ts": [NOW - timedelta(minutes=10 - k)] * 4,
            "temperature_c": [10.0 * k + 1, 10.0 * k + 2, 10.0 * k + 3, 99.0],
            "mode": [1, 2, 3, 1],
        }
    )


@dataclass
class Stand:
    url: str
    engine: Engine
    sessions: sessionmaker[Session]
    offline: OfflineStore
    batch: BatchMaterializer
    registry: FeatureRegistry
    client: redis.Redis
    view: pb.FeatureView
    entity: pb.Entity

    def run_id(self) -> str:
        """The run in progress (the newest)."""
        with read_session(self.sessions) as session:
            return quarantine.list_runs(session, "climate", 1)[0].run_id

    def runs(self) -> list[quarantine.RunCounts]:
        with read_session(self.sessions) as session:
            return quarantine.list_runs(session, "climate")

    def stored_rows(self) -> int:
        return sum(batch.num_rows for batch in self.offline.scan("climate", 1))

    def named_files(self, run_id: str) -> list[str]:
        with read_session(self.sessions) as session:
            parts = quarantine.list_quarantined(session, status="online_pending", run_id=run_id)
        return [path for part in parts for path in json.loads(part.payload)["offline_files"]]


@pytest.fixture(params=["sqlite", "postgresql"])
def stand(request: pytest.FixtureRequest, tmp_path: Path, redis_url: str) -> Iterator[Stand]:
    """A batch materializer whose waits for a lock are cut short (SQLite's busy timeout; PostgreSQL's
    lock_timeout), so a lock another writer holds fails the run's transaction within half a second."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'aether.db'}"
        engine = create_db_engine(url, busy_timeout_s=0.5)
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.fresh_url()
        engine = create_db_engine(f"{url}{quote(' -clock_timeout=500')}")
    upgrade_to_head(engine)
    sessions = create_session_factory(engine)
    registry = FeatureRegistry(sessions)
    entity = registry.create_entity(ENTITY)
    view = registry.create_feature_view(CLIMATE, pb.FeatureViewMetadata())
    offline = OfflineStore(str(tmp_path / "offline"))
    client = redis.Redis.from_url(redis_url)
    batch = BatchMaterializer(sessions, offline, client)
    yield Stand(url, engine, sessions, offline, batch, registry, client, view, entity)
    client.close()
    engine.dispose()


class LockHolder:
    """Another writer: holds SQLite's write lock (``BEGIN IMMEDIATE``), or on PostgreSQL the run's row in
    ``ingestion_runs`` (``SELECT ... FOR UPDATE``), until released."""

    def __init__(self, stand: Stand) -> None:
        self._stand = stand
        self._sqlite: sqlite3.Connection | None = None
        self._engine: Engine | None = None
        self._held: list[Connection] = []

    def hold(self, run_id: str, table: str = "ingestion_runs", key: str = "run_id") -> None:
        """Holds the lock; on PostgreSQL the row of ``table`` whose ``key`` is ``run_id``."""
        if self._stand.engine.dialect.name == "sqlite":
            database = self._stand.engine.url.database or ""
            self._sqlite = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
            self._sqlite.execute("BEGIN IMMEDIATE")
            return
        self._engine = create_db_engine(self._stand.url)
        connection = self._engine.connect()
        connection.begin()
        query = text(f"SELECT {key} FROM {table} WHERE {key} = :key FOR UPDATE")
        assert str(connection.execute(query, {"key": run_id}).scalar()) == run_id
        self._held.append(connection)

    def release(self) -> None:
        if self._sqlite is not None:
            self._sqlite.rollback()
            self._sqlite.close()
            self._sqlite = None
        for connection in self._held:
            connection.close()
        self._held.clear()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def test_a_chunk_whose_transaction_fails_leaves_no_file_and_the_counts_match_the_store(stand: Stand) -> None:
    holder = LockHolder(stand)

    def source() -> Iterator[pa.Table]:
        yield chunk(0)  # stored and counted
        holder.hold(stand.run_id())  # the next chunk's transaction waits for it and fails
        yield chunk(1)

    try:
        with pytest.raises(AetherError, match="had stored and counted 4 records") as stopped:
            stand.batch.materialize(stand.view, stand.entity, source())
    finally:
        holder.release()
    assert isinstance(stopped.value.__cause__, OperationalError)
    (run,) = stand.runs()
    assert (run.records_in, run.accepted, run.quarantined) == (4, 3, 1)  # chunk 0's
    assert stand.stored_rows() == run.accepted == 3  # chunk 1's file was removed
    assert len(stand.offline.files("climate", 1)) == 1
    assert sorted(stand.named_files(run.run_id)) == stand.offline.files("climate", 1)


class FailsOneCommit:
    """A fake for a connection lost during COMMIT, on a sessionmaker's session events: the COMMIT of the
    next chunk transaction (one that moves a run's counters) raises OperationalError once it is armed,
    after the database committed (``landed``: its reply lost) or before (the COMMIT itself lost)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.armed: bool | None = None  # None: off; else whether the failing commit lands
        event.listen(sessions, "before_flush", self._flush)
        event.listen(sessions, "before_commit", self._before)
        event.listen(sessions, "after_commit", self._after)

    def _fails(self, session: Session, landed: bool) -> bool:
        if self.armed is landed and session.info.pop("chunk", False):
            self.armed = None
            return True
        return False

    def _flush(self, session: Session, _context: object, _instances: object) -> None:
        # Only a chunk's transaction writes a run's counters.
        if any(isinstance(row, IngestionRunRow) for row in [*session.new, *session.dirty]):
            session.info["chunk"] = True

    def _before(self, session: Session) -> None:
        if self._fails(session, landed=False):
            raise OperationalError("COMMIT", None, ConnectionResetError("connection lost at COMMIT (fake)"))

    def _after(self, session: Session) -> None:
        if self._fails(session, landed=True):
            raise OperationalError("COMMIT", None, ConnectionResetError("reply to COMMIT lost (fake)"))


def test_a_chunk_that_fails_at_commit_keeps_its_files_iff_it_committed(stand: Stand) -> None:
    fault = FailsOneCommit(stand.sessions)

    def source(landed: bool) -> Iterator[pa.Table]:
        yield chunk(0)
        fault.armed = landed  # chunk 1's COMMIT fails
        yield chunk(1)

    # Each says what its run stored and counted: chunk 1 too where its COMMIT landed.
    with pytest.raises(Internal, match=r"reply to COMMIT lost.*counted 8 records \(6 accepted"):
        stand.batch.materialize(stand.view, stand.entity, source(landed=True))
    committed = stand.run_id()
    with pytest.raises(Internal, match=r"connection lost at COMMIT.*counted 4 records \(3 accepted"):
        stand.batch.materialize(stand.view, stand.entity, source(landed=False))
    lost = stand.run_id()
    assert fault.armed is None  # both faults struck
    counts = {run.run_id: (run.records_in, run.accepted, run.quarantined) for run in stand.runs()}
    assert counts == {committed: (8, 6, 2), lost: (4, 3, 1)}
    # The committed chunk's files stay, counted; the lost one's are gone: the store holds what runs count.
    assert stand.stored_rows() == 6 + 3
    stored = stand.offline.files("climate", 1)
    assert len(stored) == 3
    # Every stored file is named by its run's online part (handed to the next replay), and only those.
    named = stand.named_files(committed) + stand.named_files(lost)
    assert sorted(named) == sorted(stored)


def test_a_chunk_whose_connection_is_cut_at_commit_keeps_no_file_on_postgresql(
    tmp_path: Path, redis_url: str, postgres_server: PostgresServer
) -> None:
    """A real fault at COMMIT: the chunk's server process is terminated right before its COMMIT is sent,
    so the COMMIT fails on a closed connection and the run reads back, on a new one, that it did not
    commit."""
    db = registry_on(postgres_server.fresh_url(), CLIMATE)
    engine, sessions, entity, view = db.engine, db.sessions, db.entity, db.view
    offline = OfflineStore(str(tmp_path / "offline"))
    client = redis.Redis.from_url(redis_url)
    batch = BatchMaterializer(sessions, offline, client)
    armed: list[bool] = []
    cut: list[int] = []

    def flush(session: Session, _context: object, _instances: object) -> None:
        if any(isinstance(row, IngestionRunRow) for row in [*session.new, *session.dirty]):
            session.info["chunk"] = True

    def terminate(session: Session) -> None:
        if armed and session.info.pop("chunk", False):
            armed.clear()
            pid = session.connection().connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
            with engine.connect() as other:  # another server process ends this one
                query = text("SELECT pg_terminate_backend(:pid, 5000)")
                assert other.execute(query, {"pid": pid}).scalar() is True
            cut.append(pid)

    event.listen(sessions, "before_flush", flush)
    event.listen(sessions, "before_commit", terminate)

    def source() -> Iterator[pa.Table]:
        yield chunk(0)
        armed.append(True)  # chunk 1's connection is cut before its COMMIT goes out
        yield chunk(1)

    try:
        with pytest.raises(AetherError, match="had stored and counted 4 records") as stopped:
            batch.materialize(view, entity, source())
        assert isinstance(stopped.value.__cause__, OperationalError)
        assert len(cut) == 1
        with read_session(sessions) as session:
            (run,) = quarantine.list_runs(session, "climate")
        assert (run.records_in, run.accepted, run.quarantined) == (4, 3, 1)  # chunk 0's: chunk 1 rolled back
        assert sum(b.num_rows for b in offline.scan("climate", 1)) == run.accepted
        assert len(offline.files("climate", 1)) == 1
    finally:
        client.close()
        engine.dispose()


def _stopped_by_the_outage(
    batch: BatchMaterializer, db: RegistryDb, source: Iterator[pa.Table], postgres_server: PostgresServer
) -> tuple[AetherError, quarantine.RunCounts]:
    """Runs ``source`` into ``db``'s view while the source (or a hook) stops PostgreSQL, starts it again,
    and checks what every such run answers: FAILED_PRECONDITION naming the outage and the run, never a
    status a client retries as it was. Returns the error and the run's record."""
    try:
        with pytest.raises(AetherError) as stopped:
            batch.materialize(db.view, db.entity, source)
    finally:
        postgres_server.start_again()
    error = stopped.value
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION, error
    assert "metadata database unavailable" in error.message
    assert "do not ingest them again" in error.message
    with read_session(db.sessions) as session:
        (run,) = quarantine.list_runs(session, "climate")
    assert run.run_id in error.message
    return error, run


def test_a_run_cut_short_by_a_database_outage_says_what_it_stored_so_no_retry_stores_it_twice(
    tmp_path: Path, redis_url: str, postgres_server: PostgresServer
) -> None:
    """PostgreSQL goes down (a real stop; ``fast`` keeps every commit, so the counts are exact) after two
    of a run's chunks were stored and counted. The run answered a plain UNAVAILABLE ("metadata database
    unavailable"), which a client retries as it was, and the retry stored both chunks' rows a second
    time. Now the error is FAILED_PRECONDITION naming the outage and what the run stored and counted."""
    db = registry_on(postgres_server.fresh_url(), CLIMATE)
    offline = OfflineStore(str(tmp_path / "offline"))
    client = redis.Redis.from_url(redis_url)
    batch = BatchMaterializer(db.sessions, offline, client)

    def source() -> Iterator[pa.Table]:
        yield chunk(0)
        yield chunk(1)
        postgres_server.stop("fast")  # the next chunk finds the database gone
        yield chunk(2)

    try:
        error, run = _stopped_by_the_outage(batch, db, source(), postgres_server)
        assert "had stored and counted 8 records (6 accepted, 2 quarantined)" in error.message
        assert (run.records_in, run.accepted, run.quarantined) == (8, 6, 2)
        assert sum(b.num_rows for b in offline.scan("climate", 1)) == run.accepted
    finally:
        client.close()
        db.engine.dispose()


class StopsTheDatabaseAfterTheOnlineWrite(redis.Redis):
    """A real Redis client whose pipeline, once ``armed``, runs its commands (the run's online write) and
    then stops PostgreSQL for real: a named hook that times a real outage to the one step after the online
    write, the version's re-check, which no source or server can time from outside."""

    def __init__(self, url: str, postgres: PostgresServer) -> None:
        super().__init__(connection_pool=redis.ConnectionPool.from_url(url))
        self.postgres = postgres
        self.armed = False

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> redis.client.Pipeline:
        client = self

        class _Pipeline(redis.client.Pipeline):
            def execute(self, raise_on_error: bool = True) -> list[object]:
                answers: list[object] = super().execute(raise_on_error)
                if client.armed:
                    client.armed = False
                    client.postgres.stop("fast")
                return answers

        return _Pipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


def test_a_run_whose_database_fails_after_its_online_write_says_what_it_stored(
    tmp_path: Path, redis_url: str, postgres_server: PostgresServer
) -> None:
    """After the run's online write the version's status is read once more; with the database down at
    that moment the run answered UNAVAILABLE although every row was stored, counted and online, and a
    client's retry stored them all a second time."""
    db = registry_on(postgres_server.fresh_url(), CLIMATE)
    offline = OfflineStore(str(tmp_path / "offline"))
    client = StopsTheDatabaseAfterTheOnlineWrite(redis_url, postgres_server)
    batch = BatchMaterializer(db.sessions, offline, client)

    def source() -> Iterator[pa.Table]:
        yield chunk(0)
        client.armed = True  # the source is read: the next pipeline is the run's online write

    try:
        error, run = _stopped_by_the_outage(batch, db, source(), postgres_server)
        assert "whether its version was retired meanwhile could not be read" in error.message
        assert run.accepted > 0
    finally:
        client.close()
        db.engine.dispose()


def test_a_chunk_whose_offline_write_fails_part_way_leaves_no_file(stand: Stand) -> None:
    """A chunk of two dates whose second date's partition cannot be made (a plain file holds its name, a
    real fault): the first date's file, written before, goes with the failed write."""
    day = chunk(0).column("event_ts")[0].as_py().date()
    second = stand.offline.partition_path("climate", 1, day + timedelta(days=1))
    Path(second).parent.mkdir(parents=True, exist_ok=True)
    Path(second).write_bytes(b"not a folder")
    two_days = pa.concat_tables(
        [chunk(0), chunk(1).set_column(1, "event_ts", pa.array([NOW + timedelta(days=1)] * 4))]
    )
    with pytest.raises(OSError):
        stand.batch.materialize(stand.view, stand.entity, [two_days])
    assert stand.offline.files("climate", 1) == []
    assert stand.stored_rows() == 0
    assert [run.accepted for run in stand.runs()] == []  # the run failed before its first transaction


def test_an_offline_write_failing_after_stored_chunks_says_what_the_run_stored(stand: Stand) -> None:
    """Chunk 0 stored and counted, then chunk 1's partition cannot be made (a plain file holds its name):
    the store's error (FAILED_PRECONDITION naming the store) says what the run stored and counted."""
    day = chunk(0).column("event_ts")[0].as_py().date()
    second = stand.offline.partition_path("climate", 1, day + timedelta(days=1))
    Path(second).parent.mkdir(parents=True, exist_ok=True)
    Path(second).write_bytes(b"not a folder")
    later = chunk(1).set_column(1, "event_ts", pa.array([NOW + timedelta(days=1)] * 4))
    refused = r"offline store .* could not write rows .*FileExistsError.*had stored and counted 4 records"
    with pytest.raises(FailedPrecondition, match=refused):
        stand.batch.materialize(stand.view, stand.entity, [chunk(0), later])
    (run,) = stand.runs()
    assert (run.records_in, run.accepted, run.quarantined) == (4, 3, 1)
    assert stand.stored_rows() == 3


class LocksAfterWrite(OfflineStore):
    """A fake for timing only: an offline store whose next write, once it has written its files, has
    ``holder`` take its lock (a real fault: the replay's commit that follows waits and fails), and lets
    it go once those files are gone again."""

    def __init__(self, root: str, holder: LockHolder, record_id: int) -> None:
        super().__init__(root)
        self._holder, self._record_id = holder, record_id
        self.written: list[str] = []
        self.released = threading.Event()

    def write(
        self,
        view: str,
        version: int,
        table: pa.Table,
        announce: Callable[[Sequence[str]], None] | None = None,
    ) -> list[str]:
        paths = super().write(view, version, table, announce)
        if not self.written:
            self.written = paths
            self._holder.hold(str(self._record_id), "quarantine", "id")
            threading.Thread(target=self._release_once_removed, daemon=True).start()
        return paths

    def _release_once_removed(self) -> None:
        deadline = time.monotonic() + 20
        while any(Path(path).exists() for path in self.written) and time.monotonic() < deadline:
            time.sleep(0.01)
        self._holder.release()
        self.released.set()


def test_a_replay_whose_commit_fails_removes_its_files_and_hands_its_records_back(
    stand: Stand, tmp_path: Path
) -> None:
    stand.batch.materialize(stand.view, stand.entity, [chunk(0)])  # 3 accepted, sensor 899 quarantined
    with read_session(stand.sessions) as session:
        (record,) = quarantine.list_quarantined(session, view="climate")
    fixed = json.dumps({**json.loads(record.payload), "temperature_c": 20.0})
    holder = LockHolder(stand)
    store = LocksAfterWrite(str(tmp_path / "offline"), holder, record.id)
    replayer = IngestionService(stand.sessions, stand.registry, store, stand.client)
    try:
        with pytest.raises(OperationalError):
            replayer.replay([record.id], {record.id: fixed})
        assert store.released.wait(20)
    finally:
        holder.release()
    assert store.written and not any(Path(path).exists() for path in store.written)
    assert stand.stored_rows() == sum(run.accepted for run in stand.runs()) == 3
    with read_session(stand.sessions) as session:
        assert quarantine.get_quarantined(session, record.id).status == quarantine.QUARANTINED
    # Handed back, it is replayed once.
    assert IngestionService(stand.sessions, stand.registry, stand.offline, stand.client).replay(
        [record.id], {record.id: fixed}
    ).replayed == [record.id]
    assert stand.stored_rows() == sum(run.accepted for run in stand.runs()) == 4
