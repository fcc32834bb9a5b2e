"""A retire racing a stream materializer's commit, against a real redis-server and a real SQLite file and
PostgreSQL: no batch is committed after the retire's SQL transaction committed (``commit_gate.py``).

The materializer read its version's status only every ``status_every_s``; a batch it committed less than
that after a retire had its online values written and was stored and counted, for a version nothing
serves. Every commit now reads the status, holding the version row until the batch's Redis transaction
has run. Here the periodic check never comes (``status_every_s`` of an hour), so only the commit's read
can see the retire."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import redis
from sqlalchemy import Engine, event

from clients.aether.v1 import types_pb2 as t
from control_plane.db import create_db_engine, create_session_factory, read_session
from control_plane.features.registry import FeatureRegistry
from control_plane.ingestion import quarantine
from control_plane.ingestion.streaming.materializer import StreamMaterializer, ViewDeleted, ViewRetired
from control_plane.ingestion.streaming.options import MaterializerOptions
from control_plane.ingestion.streaming.redis_source import RedisStreamSource
from control_plane.offline.store import OfflineStore
from control_plane.redis_clients import sync_client
from kernels.online_keys import online_key
from tests.integration.ingestion.conftest import RegistryDb, registry_on
from tests.integration.ingestion.streaming_support import STREAM, Event, publish
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

NEW_KEY = online_key("sensor", ["7"], "clicks", 1)
#: How long the fault's retire waits for the database's lock before it gives up.
LOCK_WAIT_S = 0.3


def _materializer(
    tmp_path: Path, client: redis.Redis, db: RegistryDb
) -> tuple[RedisStreamSource, StreamMaterializer, OfflineStore]:
    # No periodic status check after the start's: only the commit's read can see a retire.
    options = MaterializerOptions(count=3, block_ms=10, status_every_s=3600.0)
    source = RedisStreamSource(client, STREAM, options.group, "c1")
    offline = OfflineStore(str(tmp_path / "offline"))
    materializer = StreamMaterializer(db.view, db.entity, source, client, db.sessions, offline, options)
    materializer.start()
    return source, materializer, offline


def _counts(db: RegistryDb, materializer: StreamMaterializer) -> tuple[int, int]:
    with read_session(db.sessions) as session:
        counts = quarantine.run_counts(session, materializer.run.run_id)
    return counts.records_in, counts.accepted


def test_a_batch_read_after_a_retire_is_not_committed(tmp_path: Path, db_url: str, redis_url: str) -> None:
    db = registry_on(db_url)
    client = redis.Redis.from_url(redis_url)
    now = datetime.now(UTC)
    publish(client, [Event(i % 3, now - timedelta(seconds=60 - i), 1.0 + i) for i in range(3)])
    source, materializer, offline = _materializer(tmp_path, client, db)
    assert materializer.process(source.read(3, 10)).accepted == 3  # committed before the retire
    db.registry.deprecate_version("clicks", 1)
    db.registry.retire_version("clicks", 1)
    publish(client, [Event(7, now, 5.0)])  # a new entity: it must not appear online

    with pytest.raises(ViewRetired, match="'clicks' version 1 was retired"):
        materializer.process(source.read(3, 10))
    # Nothing of the refused batch: no online value, no receipt, no offline row, no count; its message
    # stays pending (unacknowledged) in the stream. The batch before it is drained: stored and counted.
    assert not client.exists(NEW_KEY)
    assert client.llen(materializer.keys.outbox) == 0
    assert _counts(db, materializer) == (3, 3)
    assert pa.Table.from_batches(list(offline.scan("clicks", 1))).num_rows == 3
    assert client.xpending(STREAM, "materializer")["pending"] == 1
    db.engine.dispose()


def _short_lock_wait(url: str) -> Engine:
    """An engine whose transactions give up on a lock after ``LOCK_WAIT_S`` (SQLite's busy timeout,
    PostgreSQL's ``lock_timeout``), for the fault's retire, made from inside the materializer's commit."""
    engine = create_db_engine(url, busy_timeout_s=LOCK_WAIT_S)
    if engine.dialect.name == "postgresql":

        @event.listens_for(engine, "connect")
        def _lock_timeout(dbapi_connection: Any, _record: Any) -> None:
            with dbapi_connection.cursor() as cursor:
                cursor.execute(f"SET lock_timeout = {int(LOCK_WAIT_S * 1000)}")
            dbapi_connection.commit()

    return engine


def _retiring_first(
    commit: Callable[..., int], retire: Callable[[], None], tries: list[str]
) -> Callable[..., int]:
    """Fault wrapper of ``Committer.commit``: retires the view version from a second connection right
    before the batch's Redis transaction (inside the commit gate's SQL transaction), recording whether
    the retire got through."""

    def commit_after_retire(*args: Any, **kwargs: Any) -> int:
        try:
            retire()
            tries.append("retired")
        except Exception as exc:  # the lock's wait ran out: how each backend says so
            tries.append(f"refused: {type(exc).__name__}")
        return commit(*args, **kwargs)

    return commit_after_retire


def test_a_retire_during_a_batch_commit_waits_for_it(
    tmp_path: Path, db_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A status read before the commit is not enough: a retire committing between the read and the Redis
    # transaction let the batch in. The read holds the version row (SQLite: the write lock; PostgreSQL:
    # FOR SHARE) until the commit ends, so the retire cannot commit in between.
    db = registry_on(db_url)
    client = redis.Redis.from_url(redis_url)
    now = datetime.now(UTC)
    db.registry.deprecate_version("clicks", 1)
    source, materializer, offline = _materializer(tmp_path, client, db)
    short = _short_lock_wait(db_url)
    other = FeatureRegistry(create_session_factory(short))
    tries: list[str] = []
    committer = materializer._committer
    retire = lambda: other.retire_version("clicks", 1)  # noqa: E731
    monkeypatch.setattr(committer, "commit", _retiring_first(committer.commit, retire, tries))

    publish(client, [Event(7, now, 5.0)])
    assert materializer.process(source.read(3, 10)).accepted == 1
    assert len(tries) == 1 and tries[0].startswith("refused"), tries  # it waited for the lock, and gave up
    assert client.exists(NEW_KEY)  # the batch committed while the version still took rows
    assert db.registry.get_feature_view("clicks", 1).status == t.DEPRECATED  # the retire rolled back
    monkeypatch.undo()

    db.registry.retire_version("clicks", 1)  # after the commit: it goes through
    publish(client, [Event(8, now, 6.0)])
    with pytest.raises(ViewRetired):
        materializer.process(source.read(3, 10))
    assert not client.exists(online_key("sensor", ["8"], "clicks", 1))
    assert _counts(db, materializer) == (1, 1)
    assert pa.Table.from_batches(list(offline.scan("clicks", 1))).num_rows == 1
    short.dispose()
    db.engine.dispose()


def test_a_batch_read_after_a_delete_is_not_committed(tmp_path: Path, db_url: str, redis_url: str) -> None:
    # A delete in SQL whose cleanup has not run yet (no fence in Redis for the commit to see).
    db = registry_on(db_url)
    client = redis.Redis.from_url(redis_url)
    source, materializer, _offline = _materializer(tmp_path, client, db)
    db.registry.delete_feature_view("clicks")
    publish(client, [Event(7, datetime.now(UTC), 5.0)])
    with pytest.raises(ViewDeleted):
        materializer.process(source.read(3, 10))
    assert not client.exists(NEW_KEY)
    assert client.keys("aether:materializer:*") == []  # its state keys removed, as the periodic check does
    db.engine.dispose()


class _CountingGate:
    """Probe wrapper of the materializer's ``CommitGate``: counts the SQL transactions (on SQLite, the
    write lock) the commits take."""

    def __init__(self, gate: Any) -> None:
        self._gate = gate
        self.entered = 0

    @contextmanager
    def held(self) -> Iterator[str | None]:
        self.entered += 1
        with self._gate.held() as gone:
            yield gone


def _counting(call: Callable[..., Any], calls: list[float]) -> Callable[..., Any]:
    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(time.monotonic())
        return call(*args, **kwargs)

    return counted


def test_a_redis_that_stops_answering_mid_commit_holds_the_sql_lock_once_not_per_retry(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Redis freezes (SIGSTOP: it accepts connections and never answers, as behind a partition) inside a
    # batch's commit gate. The first EXEC holds the gate (on SQLite: the write lock every other writer
    # needs) for one Redis timeout; each retry must then meet the silent Redis before taking the gate
    # again (Committer.watch_again), not hold the lock for a timeout per retry while Redis stays away.
    server = RedisServer()
    server.start()
    assert server.process is not None
    pid = server.process.pid
    frozen = False
    try:
        db = registry_on(db_url)
        client = sync_client(server.url, 0.3)
        now = datetime.now(UTC)
        source, materializer, _offline = _materializer(tmp_path, client, db)
        gate = _CountingGate(materializer._gate)
        monkeypatch.setattr(materializer, "_gate", gate)
        committer = materializer._committer
        begins: list[float] = []
        monkeypatch.setattr(committer, "begin", _counting(committer.begin, begins))
        real_commit = committer.commit

        def freezing_commit(*args: Any, **kwargs: Any) -> int:  # fault: Redis freezes before the EXEC
            nonlocal frozen
            if not frozen:
                os.kill(pid, signal.SIGSTOP)
                frozen = True
            return real_commit(*args, **kwargs)

        monkeypatch.setattr(committer, "commit", freezing_commit)
        publish(client, [Event(7, now, 5.0)])
        batch = source.read(3, 10)
        outcome: list[Any] = []
        worker = threading.Thread(target=lambda: outcome.append(materializer.process(batch)), daemon=True)
        worker.start()
        deadline = time.monotonic() + 20
        while len(begins) < 4 and time.monotonic() < deadline:  # three retries met the frozen Redis
            time.sleep(0.05)
        assert len(begins) >= 4, begins
        entered_while_frozen = gate.entered
        os.kill(pid, signal.SIGCONT)
        frozen = False
        worker.join(20)
        assert outcome and outcome[0].accepted == 1
        assert entered_while_frozen == 1  # the first attempt only: no retry took the lock
        # Thawed, Redis runs the EXEC it had buffered (the first attempt's, whose answer timed out): the
        # next retry finds the receipt and commits nothing again; or that EXEC was lost and one more gate
        # commits the batch.
        assert gate.entered <= 2
        assert client.exists(NEW_KEY)
        db.engine.dispose()
    finally:
        if frozen:
            os.kill(pid, signal.SIGCONT)
        server.close()
