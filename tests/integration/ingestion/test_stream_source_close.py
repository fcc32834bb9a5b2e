"""The materializer's process closes its stream source on every way out, and closing a Redis source takes
its consumer out of the group unless entries are still pending for it.

Found in review: ``python -m control_plane.ingestion.streaming`` never closed its source. A Kafka
consumer stayed in its group until the broker's session timeout (its partitions unread meanwhile); a
Redis consumer, named after host and pid by default, stayed listed in its group for good, one more with
every start. Real redis-server, SQLite, the materializer as its own process."""

from __future__ import annotations

import signal
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import redis

from control_plane.features.registry import FeatureRegistry
from control_plane.ingestion.streaming.redis_source import RedisStreamSource
from control_plane.ingestion.streaming.state_keys import StateKeys
from tests.integration.ingestion.streaming_support import (
    MODULE,
    STREAM,
    Event,
    materializer_env,
    publish,
    recent_events,
    registry_db,
    wait_until_handled,
)

pytestmark = pytest.mark.integration


def _consumers(client: redis.Redis, stream: str, group: str) -> dict[str, int]:
    """Each consumer of the group with its number of pending entries."""
    listed: Any = client.xinfo_consumers(stream, group)
    return {entry["name"].decode(): int(entry["pending"]) for entry in listed}


def _start(args: list[str], env: Mapping[str, str], stderr: Path) -> subprocess.Popen[str]:
    """The materializer's process (``start_materializer``), its log in ``stderr``."""
    command = [*MODULE, "--view", "clicks", *args]
    with stderr.open("w") as log:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    assert process.stdout is not None
    assert "aether materializer running" in process.stdout.readline()
    return process


@pytest.mark.parametrize("way_out", ["sigterm", "sigint", "retired", "fenced"])
def test_the_materializer_process_closes_its_source_on_every_way_out(
    tmp_path: Path, redis_url: str, way_out: str
) -> None:
    url, sessions, _view, _entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    consumer = f"c-{uuid.uuid4().hex[:8]}"
    keys = StateKeys.of("clicks", 1, "materializer")
    env = materializer_env(tmp_path, url, redis_url)
    log = tmp_path / "materializer.log"
    process = _start(["--consumer", consumer, "--block-ms", "20"], env, log)
    try:
        events = recent_events(5)
        publish(client, events)
        wait_until_handled(client, keys, len(events), timeout_s=30)
        assert consumer in _consumers(client, STREAM, "materializer")  # it read as that consumer
        if way_out == "retired":  # the view's end: one line and exit status 1
            registry = FeatureRegistry(sessions)
            registry.deprecate_version("clicks", 1)
            registry.retire_version("clicks", 1)
            assert process.wait(timeout=30) == 1
        elif way_out == "fenced":  # another materializer took the view over: its next read ends it in error
            client.set(keys.owner, "another materializer")
            publish(client, [Event(0, events[-1].ts, 1.0)])
            assert process.wait(timeout=30) == 1
        else:
            process.send_signal(signal.SIGTERM if way_out == "sigterm" else signal.SIGINT)
            assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    consumers = _consumers(client, STREAM, "materializer")
    if way_out == "fenced":
        # The event read as it was fenced is pending for it: the consumer stays, so that the event is
        # reclaimed rather than dropped with it; the close said so.
        assert consumers[consumer] == 1
        assert f"consumer {consumer!r} stays in group" in log.read_text()
    else:
        # Before, it stayed listed (one more with every start); Kafka's kept the group waiting for its
        # session timeout.
        assert consumer not in consumers


def test_closing_a_redis_source_keeps_a_consumer_with_pending_entries(redis_url: str) -> None:
    """``XGROUP DELCONSUMER`` drops the consumer's pending entries, which the group never delivers again:
    a consumer closed with entries read and not committed stays, so the next one reclaims them."""
    client = redis.Redis.from_url(redis_url)
    stream, group = f"events:close:{uuid.uuid4().hex}", "g"
    entry = client.xadd(stream, {"n": "1"}).decode()  # type: ignore[union-attr]
    busy = RedisStreamSource(client, stream, group, "busy")
    idle = RedisStreamSource(client, stream, group, "idle")
    assert busy.read(10, 10).ids == [entry]  # pending for busy, not acknowledged
    client.xgroup_createconsumer(stream, group, "idle")  # listed in the group, nothing pending
    assert _consumers(client, stream, group) == {"busy": 1, "idle": 0}
    idle.close()
    busy.close()
    assert _consumers(client, stream, group) == {"busy": 1}
    # Kept, the entry is reclaimed by the next consumer rather than lost with ``busy``.
    successor = RedisStreamSource(client, stream, group, "successor")
    assert successor.reclaim(0, 10).ids == [entry]
    successor.close()
