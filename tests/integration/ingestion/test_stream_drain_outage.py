"""A busy stream materializer waits out a metadata database outage in its outbox drain (``drain_retry.py``),
against a real redis-server and a real PostgreSQL stopped and started again while it drains: it does not
exit, the receipt stays in the outbox until SQL has recorded it, and every event is counted once."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
import redis
import sqlalchemy.exc
from sqlalchemy import text

from control_plane.db import create_db_engine, read_session
from control_plane.ingestion import quarantine
from control_plane.ingestion.streaming.materializer import StreamMaterializer
from control_plane.ingestion.streaming.options import MaterializerOptions
from control_plane.ingestion.streaming.redis_source import RedisStreamSource
from control_plane.ingestion.streaming.stops import StopAsked
from control_plane.offline.store import OfflineStore
from tests.integration.ingestion.conftest import registry_on
from tests.integration.ingestion.streaming_support import (
    STREAM,
    Event,
    publish,
    registry_db,
    started_materializer,
)
from tests.support.postgres_server import PostgresServer
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration


def stopping_before_drain(
    materializer: StreamMaterializer, postgres_server: PostgresServer, then: Callable[[], None] = lambda: None
) -> threading.Event:
    """Fault wrapper of the materializer's next outbox drain: right before it, stops PostgreSQL (an
    administrator's restart: connections closed, commits kept) and runs ``then``; so the outage hits the
    drain, after the batch's commit, which reads its version's status in SQL too (``commit_gate.py``).
    Returns an event set once it has stopped the database."""
    flush = materializer.flush
    stopped = threading.Event()

    def stop_then_flush() -> int:
        materializer.flush = flush  # type: ignore[method-assign]  # once
        postgres_server.stop(mode="fast")
        stopped.set()
        then()
        return flush()

    materializer.flush = stop_then_flush  # type: ignore[method-assign]
    return stopped


def events(count: int) -> list[Event]:
    """``count - 1`` fresh events and one dated a month ahead, which validation quarantines."""
    now = datetime.now(UTC)
    fresh = [Event(i % 3, now - timedelta(seconds=60 - i), 1.0 + i) for i in range(count - 1)]
    return [*fresh, Event(1, now + timedelta(days=30), 2.0)]


def test_a_busy_materializer_waits_out_a_database_restart_and_counts_every_event_once(
    tmp_path: Path, redis_url: str, postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Its drain (every drain_every batches) exited with OperationalError on the first PostgreSQL restart,
    # where its idle status check waits one out. Now the drain is tried again until the database answers.
    db = registry_on(postgres_server.fresh_url())
    engine, sessions, entity, view = db.engine, db.sessions, db.entity, db.view
    client = redis.Redis.from_url(redis_url)
    # A drain after every batch; no status check after the start's (this test is about the drain).
    options = MaterializerOptions(
        count=10, block_ms=10, drain_every=1, status_every_s=3600.0, rules_every_s=3600.0
    )
    _source, materializer = started_materializer(tmp_path, client, sessions, view, entity, options)
    publish(client, events(5))
    assert materializer.step().received == 5  # drained with the database up
    caplog.set_level(logging.INFO, "aether.ingestion.stream")

    seen_in_outage: list[int] = []

    def restart() -> None:  # while the materializer's drain is failing
        try:
            time.sleep(1.0)
            seen_in_outage.append(int(client.llen(materializer.keys.outbox)))  # type: ignore[arg-type]
        finally:
            postgres_server.start_again()

    restarter = threading.Thread(target=restart, name="pg-restart")
    stopping_before_drain(materializer, postgres_server, restarter.start)
    try:
        publish(client, events(5))
        stats = materializer.step()  # committed to Redis, then drained once the database is back
    finally:
        if restarter.is_alive():
            restarter.join()  # the database is up again, whatever the step did
        else:
            postgres_server.start_again()
    assert (stats.received, stats.accepted, stats.quarantined) == (5, 4, 1)
    assert seen_in_outage == [1]  # the committed batch waited in the outbox: nothing acknowledged early
    assert client.llen(materializer.keys.outbox) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1, warned  # rate-limited: the first failed try only
    assert "clicks v1: the outbox could not be drained (1 tries in a row)" in warned[0]
    assert "metadata database unavailable" in warned[0]
    assert any("the outbox drains again" in r.getMessage() for r in caplog.records)

    publish(client, events(3))  # and it goes on
    assert materializer.step().received == 3
    with read_session(sessions) as session:
        counts = quarantine.run_counts(session, materializer.run.run_id)
    assert (counts.records_in, counts.accepted, counts.quarantined) == (13, 10, 3)
    history = pa.Table.from_batches(list(OfflineStore(str(tmp_path / "offline")).scan("clicks", 1)))
    assert history.num_rows == 10  # each accepted event's row once
    engine.dispose()


def test_a_stop_asked_while_the_drain_waits_out_an_outage_ends_it_and_loses_nothing(
    tmp_path: Path, redis_url: str, postgres_server: PostgresServer
) -> None:
    # SIGTERM (the stop event) during a PostgreSQL outage was not honoured until the database came back:
    # the drain retried without looking at it, so a rolling restart hung until its stop timed out and
    # the process was killed. Now the wait ends with StopAsked and the outbox keeps the committed batch.
    db = registry_on(postgres_server.fresh_url())
    engine, sessions, entity, view = db.engine, db.sessions, db.entity, db.view
    client = redis.Redis.from_url(redis_url)
    options = MaterializerOptions(count=10, block_ms=10, drain_every=1, status_every_s=3600.0)
    _source, materializer = started_materializer(tmp_path, client, sessions, view, entity, options)
    outcome: list[BaseException | None] = []

    def loop() -> None:  # the loop of control_plane/ingestion/streaming/__main__.py
        try:
            while not materializer.stop.is_set():
                materializer.step()
            materializer.flush()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    stopped = stopping_before_drain(materializer, postgres_server)
    try:
        publish(client, events(5))
        worker = threading.Thread(target=loop, name="materializer", daemon=True)
        worker.start()
        assert stopped.wait(10.0)
        time.sleep(1.0)  # committed to Redis, its drain failing
        asked = time.monotonic()
        materializer.stop.set()  # what SIGTERM does
        worker.join(10.0)
        ended_after = time.monotonic() - asked
        kept = int(client.llen(materializer.keys.outbox))  # type: ignore[arg-type]
    finally:
        postgres_server.start_again()
    assert not worker.is_alive() and ended_after < 5.0, "the stop waited for the database"
    assert len(outcome) == 1 and isinstance(outcome[0], StopAsked), outcome
    assert "stopped while the metadata database was unavailable" in str(outcome[0])
    assert kept == 1  # the committed batch, for the next start

    _source, successor = started_materializer(tmp_path, client, sessions, view, entity, options)
    assert client.llen(successor.keys.outbox) == 0  # drained at its start
    with read_session(sessions) as session:
        counts = quarantine.run_counts(session, materializer.run.run_id)
    assert (counts.records_in, counts.accepted, counts.quarantined) == (5, 4, 1)
    history = pa.Table.from_batches(list(OfflineStore(str(tmp_path / "offline")).scan("clicks", 1)))
    assert history.num_rows == 4
    engine.dispose()


def test_a_commit_waits_out_a_database_restart_and_commits_nothing_meanwhile(
    tmp_path: Path, redis_url: str, postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A batch's commit reads its version's status in SQL, holding the row until the Redis transaction ran
    # (commit_gate.py): with the database down it cannot, and it waits as the drain does, committing
    # nothing (no online value, no receipt, nothing acknowledged) until the database answers.
    db = registry_on(postgres_server.fresh_url())
    engine, sessions, entity, view = db.engine, db.sessions, db.entity, db.view
    client = redis.Redis.from_url(redis_url)
    # No periodic status check or rules read during the outage: each would warn of it too.
    options = MaterializerOptions(
        count=10, block_ms=10, drain_every=1, status_every_s=3600.0, rules_every_s=3600.0
    )
    _source, materializer = started_materializer(tmp_path, client, sessions, view, entity, options)
    caplog.set_level(logging.INFO, "aether.ingestion.stream")
    seen_in_outage: list[tuple[int, int]] = []

    def restart() -> None:  # while the materializer's commit is failing
        try:
            time.sleep(1.0)
            outbox = int(client.llen(materializer.keys.outbox))  # type: ignore[arg-type]
            seen_in_outage.append((outbox, client.xpending(STREAM, options.group)["pending"]))
        finally:
            postgres_server.start_again()

    postgres_server.stop(mode="fast")
    restarter = threading.Thread(target=restart, name="pg-restart")
    restarter.start()
    try:
        publish(client, events(5))
        stats = materializer.step()
    finally:
        restarter.join()
    assert (stats.received, stats.accepted, stats.quarantined) == (5, 4, 1)
    assert seen_in_outage == [(0, 5)]  # nothing committed, the 5 messages read but not acknowledged
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1, warned
    assert (
        "clicks v1: a batch's commit could not read its version's status in SQL, or end that transaction"
        in warned[0]
    )
    assert any("batches commit again" in r.getMessage() for r in caplog.records)
    with read_session(sessions) as session:
        counts = quarantine.run_counts(session, materializer.run.run_id)
    assert (counts.records_in, counts.accepted, counts.quarantined) == (5, 4, 1)
    assert client.xpending(STREAM, options.group)["pending"] == 0
    engine.dispose()


def test_a_drain_failing_for_another_reason_still_raises_at_once(tmp_path: Path, redis_url: str) -> None:
    # Only an unavailable database is waited out: a schema the code does not know would fail forever.
    url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    options = MaterializerOptions(count=10, block_ms=10, drain_every=1, status_every_s=3600.0)
    _source, materializer = started_materializer(tmp_path, client, sessions, view, entity, options)
    engine = create_db_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE ingestion_receipts"))
    engine.dispose()
    publish(client, events(3))
    started = time.monotonic()
    with pytest.raises(sqlalchemy.exc.OperationalError, match="no such table: ingestion_receipts"):
        materializer.step()
    assert time.monotonic() - started < 1.0
    assert client.llen(materializer.keys.outbox) == 1  # kept for a materializer that can drain it


def test_a_stop_asked_while_a_read_waits_out_a_redis_outage_ends_it() -> None:
    # The source's retries during a Redis outage (forever: a materializer waits for Redis to come back)
    # did not look at the stop either.
    server = RedisServer()
    server.start()
    try:
        stop = threading.Event()
        source = RedisStreamSource(redis.Redis.from_url(server.url), "events:stop", "g", "c1", stop)
        server.stop()
        threading.Timer(0.5, stop.set).start()
        started = time.monotonic()
        with pytest.raises(StopAsked, match="stopped while Redis was unavailable"):
            source.read(10, 10)
        assert time.monotonic() - started < 3.0
    finally:
        server.close()
