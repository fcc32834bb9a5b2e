"""A stream materializer and its view version's lifecycle, against a real redis-server and SQLite: a
retire stops it as it stops a batch run (nothing more written into the version, what it committed before
stored and counted)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
import redis

from control_plane.db import read_session
from control_plane.features.registry import FeatureRegistry
from control_plane.ingestion import quarantine
from control_plane.ingestion.streaming.materializer import (
    MaterializerOptions,
    StreamMaterializer,
    ViewRetired,
)
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
