"""A stream materializer and its view version's lifecycle, against a real redis-server and SQLite (and a
real PostgreSQL, stopped and started again): a retire stops it as it stops a batch run (nothing more
written into the version, what it committed before stored and counted); an idle one outlives a database
restart and still stops on a later delete."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pyarrow as pa
import pytest
import redis
import redis.asyncio

from clients.aether.v1 import feature_registry_pb2 as pb
from control_plane.db import (
    read_session,
    write_session,
)
from control_plane.features.online_cleanup import OnlineCleanup
from control_plane.features.registry import FeatureRegistry
from control_plane.ingestion import quarantine
from control_plane.ingestion.quarantine import RunSource, record_outcome
from control_plane.ingestion.streaming.commit import ipc_bytes
from control_plane.ingestion.streaming.materializer import (
    REJECTED_RECORDS,
    StreamMaterializer,
    ViewDeleted,
    ViewRetired,
)
from control_plane.ingestion.streaming.options import MaterializerOptions
from control_plane.ingestion.streaming.orphans import drain_outboxes
from control_plane.ingestion.streaming.redis_source import RedisStreamSource
from control_plane.ingestion.streaming.state_keys import StateKeys
from control_plane.offline.store import OfflineStore
from kernels.online_keys import online_key
from tests.integration.ingestion.conftest import CLICKS, registry_on
from tests.integration.ingestion.streaming_support import (
    Event,
    publish,
    registry_db,
    started_materializer,
)
from tests.support.postgres_server import PostgresServer

NEW_KEY = online_key("sensor", ["7"], "clicks", 1)


def test_a_retire_stops_the_stream_materializer_after_draining_what_it_committed(
    tmp_path: Path, redis_url: str
) -> None:
    # A batch run stops at its next chunk once its version is retired (FAILED_PRECONDITION); the stream
    # materializer read no status at all, and went on writing every later event into the retired version.
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    now = datetime.now(UTC)
    publish(client, [Event(i % 3, now - timedelta(seconds=60 - i), 1.0 + i) for i in range(3)])
    options = MaterializerOptions(count=3, block_ms=10, status_every_s=0.0)
    source = RedisStreamSource(client, "events:clicks", options.group, "c1")
    offline = OfflineStore(str(tmp_path / "offline"))
    materializer = StreamMaterializer(view, entity, source, client, sessions, offline, options)
    materializer.start()
    assert materializer.process(source.read(3, 10)).accepted == 3  # committed, left in the outbox
    registry = FeatureRegistry(sessions)
    registry.deprecate_version("clicks", 1)
    registry.retire_version("clicks", 1)
    publish(client, [Event(7, now, 5.0)])  # a new entity: it must not appear online

    with pytest.raises(ViewRetired, match="'clicks' version 1 was retired"):
        materializer.step()
    assert not client.exists(NEW_KEY)
    with read_session(sessions) as session:
        counts = quarantine.run_counts(session, materializer.run.run_id)
    assert (counts.records_in, counts.accepted) == (3, 3)
    assert pa.Table.from_batches(list(offline.scan("clicks", 1))).num_rows == 3
    assert client.llen(materializer.keys.outbox) == 0

    # One started on the retired version drains what a predecessor left and stops before reading.
    again = StreamMaterializer(view, entity, source, client, sessions, offline, options)
    with pytest.raises(ViewRetired):
        again.start()
    assert not client.exists(NEW_KEY)


def test_an_idle_materializer_outlives_a_database_restart_and_still_stops_on_a_delete(
    tmp_path: Path, redis_url: str, postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Its status check (every status_every_s, busy or idle) read SQL with no retry: an idle materializer,
    # which before ran no SQL at all, exited with OperationalError on a PostgreSQL restart. A check the
    # database cannot answer is now logged and tried again at the next one.
    db = registry_on(postgres_server.fresh_url())
    engine, sessions, registry, entity, view = db.engine, db.sessions, db.registry, db.entity, db.view
    client = redis.Redis.from_url(redis_url)
    # No rules read during the outage: it would warn of it too.
    options = MaterializerOptions(count=10, block_ms=10, status_every_s=0.02, rules_every_s=3600.0)
    _source, materializer = started_materializer(tmp_path, client, sessions, view, entity, options)
    materializer.step()
    caplog.set_level(logging.INFO, "aether.ingestion.stream")
    try:
        postgres_server.stop(mode="fast")  # a restart: connections closed, commits kept
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:  # idle: ~15 status checks, none answered
            materializer.step()
    finally:
        postgres_server.start_again()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1, warned  # rate-limited: the first failed check only
    assert "clicks v1: the version's status could not be read (1 checks in a row)" in warned[0]
    for _ in range(3):
        time.sleep(options.status_every_s)
        materializer.step()  # the database answers again: still takes rows
    assert any("reads again" in r.getMessage() for r in caplog.records)

    registry.delete_feature_view("clicks")  # SQL only: no cleanup pass, so no fence in Redis
    with pytest.raises(ViewDeleted):
        for _ in range(50):
            time.sleep(options.status_every_s)
            materializer.step()
    engine.dispose()


async def test_the_delete_cleanup_drains_receipts_a_killed_materializer_left(
    tmp_path: Path, redis_url: str
) -> None:
    # A materializer killed with committed batches in its outbox leaves them to its successor's start;
    # once the view is deleted no successor can start, so the receipts stayed in Redis for good and the
    # run's counters missed acknowledged messages (a receipt did not even say which run it counts to).
    # The delete's cleanup now drains them: in = accepted + quarantined, and nothing is left.
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    now = datetime.now(UTC)
    events = [Event(i % 3, now - timedelta(seconds=60 - i), 1.0 + i) for i in range(6)]
    events[4].ts = now + timedelta(days=30)  # too far ahead: quarantined
    publish(client, events)
    options = MaterializerOptions(count=3, block_ms=10)
    source = RedisStreamSource(client, "events:clicks", options.group, "c1")
    offline = OfflineStore(str(tmp_path / "offline"))
    killed = StreamMaterializer(view, entity, source, client, sessions, offline, options)
    killed.start()
    for _ in range(2):  # committed and acknowledged, not drained: as a SIGKILL leaves them
        killed.process(source.read(3, 10))
    assert client.llen(killed.keys.outbox) == 2
    # A receipt committed before receipts named their run, in another group's outbox: it goes to the one
    # stream run of the version whose id names that group (the run its earlier drains created).
    legacy = StateKeys.of("clicks", 1, "old")
    legacy_run = RunSource("stream:events:clicks:old:clicks:v1", "clicks", 1, "stream", "events:clicks")
    with write_session(sessions) as session:
        nothing = pa.table({"payload": pa.array([], pa.string()), "reason": pa.array([], pa.string())})
        record_outcome(session, legacy_run, accepted=0, rejected=nothing, record_keys=[])
    empty = ipc_bytes(pa.table({"x": pa.array([], pa.int64())}))
    rejected_none = ipc_bytes(REJECTED_RECORDS.empty_table())
    client.hset(legacy.receipt("r1"), mapping={"history": empty, "rejected": rejected_none, "accepted": 2})
    client.rpush(legacy.outbox, legacy.receipt("r1"))

    FeatureRegistry(sessions).delete_feature_view("clicks")
    outboxes = partial(drain_outboxes, client, sessions, offline)
    async with redis.asyncio.Redis.from_url(redis_url) as cleaner:
        await OnlineCleanup(sessions, cleaner, outboxes=outboxes).run_once()

    with read_session(sessions) as session:
        counts = quarantine.run_counts(session, killed.run.run_id)
    assert (counts.records_in, counts.accepted, counts.quarantined) == (6, 5, 1)
    assert pa.Table.from_batches(list(offline.scan("clicks", 1))).num_rows == 5
    with read_session(sessions) as session:
        counts = quarantine.run_counts(session, legacy_run.run_id)
    assert (counts.records_in, counts.accepted) == (2, 2)
    assert client.keys("aether:materializer:*") == []


async def test_a_version_whose_outbox_cannot_be_drained_holds_up_no_other_deleted_version(
    tmp_path: Path, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The cleanup's pass stopped at its first failing version: one whose outbox's rows the offline store
    # refused (no write permission, a full disk) kept every version deleted after it, online keys and
    # all, in Redis for good. Each version now fails on its own, logged, and is tried again next pass.
    _url, sessions, view, entity = registry_db(tmp_path)
    registry = FeatureRegistry(sessions)
    taps = pb.FeatureViewSpec()
    taps.CopyFrom(CLICKS)
    taps.name = "taps"
    registry.create_feature_view(taps, pb.FeatureViewMetadata())
    client = redis.Redis.from_url(redis_url)
    taps_key = online_key("sensor", ["1"], "taps", 1)
    client.set(taps_key, b"blob")
    now = datetime.now(UTC)
    publish(client, [Event(i, now - timedelta(seconds=60 - i), 1.0 + i) for i in range(3)])
    options = MaterializerOptions(count=3, block_ms=10)
    source = RedisStreamSource(client, "events:clicks", options.group, "c1")
    offline = OfflineStore(str(tmp_path / "offline"))
    killed = StreamMaterializer(view, entity, source, client, sessions, offline, options)
    killed.start()
    killed.process(source.read(3, 10))  # committed, left in the outbox
    (tmp_path / "offline").mkdir()
    blocker = tmp_path / "offline" / "clicks"
    blocker.write_bytes(b"")  # a file where the view's folder goes: every offline write of clicks fails
    registry.delete_feature_view("clicks")
    registry.delete_feature_view("taps")  # deleted after: its cleanup comes after clicks's

    outboxes = partial(drain_outboxes, client, sessions, offline)
    async with redis.asyncio.Redis.from_url(redis_url) as cleaner:
        cleanup = OnlineCleanup(sessions, cleaner, outboxes=outboxes)
        done = await cleanup.run_once()
        assert [(c.view, removed) for c, removed in done] == [("taps", 1)]
        assert not client.exists(taps_key)
        assert client.llen(killed.keys.outbox) == 1  # kept for the next pass
        assert cleanup.failures == {("clicks", 1): 1}
        assert any("'clicks' version 1 failed (1 passes in a row)" in r.getMessage() for r in caplog.records)

        blocker.unlink()  # the store takes writes again
        assert [(c.view, removed) for c, removed in await cleanup.run_once()] == [("clicks", 0)]
        assert cleanup.failures == {}
    with read_session(sessions) as session:
        counts = quarantine.run_counts(session, killed.run.run_id)
    assert (counts.records_in, counts.accepted) == (3, 3)
    assert client.keys("aether:materializer:*") == []


async def test_receipts_whose_run_cannot_be_told_are_counted_to_a_run_of_their_own(
    tmp_path: Path, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A receipt committed before receipts named their run goes to the one stream run whose id names its
    # group. With none (a run id shortened to fit its column) or several (two streams, one group), it was
    # left in Redis "for the next pass", but the version was marked done: no pass came, and its records
    # were never counted. No pass could tell more, so they are counted to a run of their own, with a
    # warning: in = accepted + quarantined still holds, and nothing stays in Redis.
    _url, sessions, _view, _entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    nothing = pa.table({"payload": pa.array([], pa.string()), "reason": pa.array([], pa.string())})
    with write_session(sessions) as session:
        for stream in ("events:a", "events:b"):  # two runs of group "twin": ambiguous
            run = RunSource(f"stream:{stream}:twin:clicks:v1", "clicks", 1, "stream", stream)
            record_outcome(session, run, accepted=0, rejected=nothing, record_keys=[])
    empty = ipc_bytes(pa.table({"x": pa.array([], pa.int64())}))
    one_rejected = ipc_bytes(pa.table({"record_key": ["9-0"], "payload": ["{}"], "reason": ["bad"]}))
    for group, accepted in (("lost", 2), ("twin", 1)):  # "lost": no run names it
        keys = StateKeys.of("clicks", 1, group)
        receipt = {"history": empty, "rejected": one_rejected, "accepted": accepted}
        client.hset(keys.receipt(f"r-{group}"), mapping=receipt)
        client.rpush(keys.outbox, keys.receipt(f"r-{group}"))

    FeatureRegistry(sessions).delete_feature_view("clicks")
    offline = OfflineStore(str(tmp_path / "offline"))
    async with redis.asyncio.Redis.from_url(redis_url) as cleaner:
        cleanup = OnlineCleanup(
            sessions, cleaner, outboxes=partial(drain_outboxes, client, sessions, offline)
        )
        assert len(await cleanup.run_once()) == 1

    assert client.keys("aether:materializer:*") == []
    for group, accepted in (("lost", 2), ("twin", 1)):
        run_id = f"unmatched:{group}:clicks:v1"
        with read_session(sessions) as session:
            counts = quarantine.run_counts(session, run_id)
        assert (counts.records_in, counts.accepted, counts.quarantined) == (accepted + 1, accepted, 1)
        assert any(run_id in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
