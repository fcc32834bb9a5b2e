"""A stream materializer and its view version's lifecycle, against a real redis-server and SQLite: a
retire stops it as it stops a batch run (nothing more written into the version, what it committed before
stored and counted)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pyarrow as pa
import pytest
import redis
import redis.asyncio

from control_plane.db import read_session, write_session
from control_plane.features.online_cleanup import OnlineCleanup
from control_plane.features.registry import FeatureRegistry
from control_plane.ingestion import quarantine
from control_plane.ingestion.quarantine import RunSource, record_outcome
from control_plane.ingestion.streaming.commit import StateKeys, ipc_bytes
from control_plane.ingestion.streaming.materializer import (
    REJECTED_RECORDS,
    MaterializerOptions,
    StreamMaterializer,
    ViewRetired,
)
from control_plane.ingestion.streaming.orphans import drain_outboxes
from control_plane.ingestion.streaming.redis_source import RedisStreamSource
from control_plane.offline.store import OfflineStore
from kernels.online_keys import online_key
from tests.integration.ingestion.streaming_support import Event, publish, registry_db

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
