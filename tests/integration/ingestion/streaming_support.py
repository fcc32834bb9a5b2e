"""Shared pieces of the streaming tests: a registry with the ``clicks`` view on a SQLite file, event
publishing, the brute-force expectation of the online values from the raw events, and the materializer
run as its own process (``python -m control_plane.ingestion.streaming``)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import redis
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2 as t
from control_plane.features.registry import FeatureRegistry
from control_plane.ingestion.online import online_view_version
from control_plane.ingestion.streaming.kafka_source import KafkaSource
from control_plane.ingestion.streaming.materializer import StreamMaterializer
from control_plane.ingestion.streaming.options import MaterializerOptions
from control_plane.ingestion.streaming.redis_source import RedisStreamSource
from control_plane.ingestion.streaming.state_keys import StateKeys
from control_plane.ingestion.streaming.stream_time import DEFAULT_MAX_FUTURE_SKEW_S
from control_plane.offline.store import OfflineStore
from kernels.online_keys import online_key
from kernels.packed_blob import decode
from tests.integration.ingestion.conftest import registry_on

STREAM = "events:clicks"
BUCKET_S = 600  # gcd of the clicks windows


@dataclass
class Event:
    sensor: int
    ts: datetime
    amount: float
    id: str = ""


def registry_db(tmp_path: Path) -> tuple[str, sessionmaker[Session], pb.FeatureView, pb.Entity]:
    url = f"sqlite:///{tmp_path / 'aether.db'}"
    db = registry_on(url)
    return url, db.sessions, db.view, db.entity


def random_events(n: int, seed: int, sensors: int = 20) -> list[Event]:
    """``n`` events over the last 45 minutes, some out of order: all within the default lateness (1 h)
    when published now (an event later than the lateness is quarantined: test_stream_lateness.py)."""
    rng = np.random.default_rng(seed)
    base = datetime.now(UTC) - timedelta(minutes=45)
    offsets = np.sort(rng.integers(0, 40 * 60 * 10**6, n))
    offsets[rng.random(n) < 0.1] -= 10 * 60 * 10**6  # some late (out-of-order) events
    return [
        Event(int(s), base + timedelta(microseconds=int(o)), round(float(a), 3))
        for s, o, a in zip(rng.integers(0, sensors, n), offsets, rng.normal(10, 5, n), strict=True)
    ]


def publish(client: redis.Redis, events: list[Event]) -> None:
    pipeline = client.pipeline(transaction=False)
    for event in events:
        pipeline.xadd(STREAM, event_fields(event))  # type: ignore[arg-type]
    for event, message_id in zip(events, pipeline.execute(), strict=True):
        event.id = message_id.decode()


def recent_events(count: int) -> list[Event]:
    """``count`` events of sensors 0-2, a second apart, the newest 60 - count seconds ago (all fresh)."""
    now = datetime.now(UTC)
    return [Event(i % 3, now - timedelta(seconds=60 - i), 1.0 + i) for i in range(count)]


def run_until_idle(materializer: StreamMaterializer, timeout_s: float = 60.0) -> None:
    """Steps ``materializer`` until a step receives nothing and its source has no lag."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if materializer.step().received == 0 and materializer.source.lag().messages == 0:
            return
    raise AssertionError("the materializer did not catch up")


def started_materializer(
    tmp_path: Path,
    client: redis.Redis,
    sessions: sessionmaker[Session],
    view: pb.FeatureView,
    entity: pb.Entity,
    options: MaterializerOptions,
    max_future_skew_s: int = DEFAULT_MAX_FUTURE_SKEW_S,
) -> tuple[RedisStreamSource, StreamMaterializer]:
    """An in-process materializer of :data:`STREAM` (consumer ``c1``, offline store under ``tmp_path``),
    started; its source too, for tests that step it by hand. ``max_future_skew_s``: the source's."""
    source = RedisStreamSource(client, STREAM, options.group, "c1", max_future_skew_s=max_future_skew_s)
    offline = OfflineStore(str(tmp_path / "offline"))
    materializer = StreamMaterializer(view, entity, source, client, sessions, offline, options)
    materializer.start()
    return source, materializer


def seq(message_id: str) -> tuple[int, int]:
    ms, _, n = message_id.partition("-")
    return int(ms), int(n)


def expected_online(events: list[Event]) -> dict[int, list[float]]:
    """Per sensor, the view's features as of its newest event, by brute force over the raw events."""
    expected = {}
    for sensor in {e.sensor for e in events}:
        mine = [e for e in events if e.sensor == sensor]
        us = [int(e.ts.timestamp() * 1e6) for e in mine]
        current = max(us) // (BUCKET_S * 10**6)

        def inside(
            window_s: int, mine: list[Event] = mine, us: list[int] = us, current: int = current
        ) -> list[Event]:
            width = window_s // BUCKET_S
            return [
                e
                for e, t in zip(mine, us, strict=True)
                if current - width < t // (BUCKET_S * 10**6) <= current
            ]

        hour = inside(3600)
        last = max(hour, key=lambda e: (e.ts, seq(e.id))) if hour else None
        expected[sensor] = [
            float(len(inside(600))),
            sum(e.amount for e in hour),
            sum(e.amount for e in hour) / len(hour) if hour else math.nan,
            max(e.amount for e in inside(86400)),
            float(np.float32(last.amount)) if last else math.nan,
        ]
    return expected


def read_online(client: redis.Redis, view: pb.FeatureView, sensors: list[int]) -> dict[int, list[float]]:
    online = online_view_version(view)
    found = {}
    for sensor in sensors:
        blob = client.get(online_key("sensor", [str(sensor)], view.spec.name, view.version))
        assert isinstance(blob, bytes), f"sensor {sensor} has no online value"
        decoded = decode(blob, online.layout, view.schema_fingerprint, len(online.columns))
        record = decoded.values[0] if online.layout.names else decoded.values  # a record, or plain values
        nulls = decoded.nulls if decoded.nulls is not None else np.zeros(len(online.columns), dtype=bool)
        found[sensor] = [math.nan if nulls[i] else float(record[i]) for i in range(len(online.columns))]
    return found


def assert_close(found: dict[int, list[float]], expected: dict[int, list[float]]) -> None:
    assert found.keys() == expected.keys()
    for sensor, values in expected.items():
        for got, want in zip(found[sensor], values, strict=True):
            assert (math.isnan(got) and math.isnan(want)) or math.isclose(
                got, want, rel_tol=1e-6, abs_tol=1e-6
            ), (sensor, found[sensor], values)


def event_fields(event: Event) -> dict[str, str]:
    """An event as the fields of one stream message."""
    return {"sensor_id": str(event.sensor), "event_ts": event.ts.isoformat(), "amount": repr(event.amount)}


def materializer_env(tmp_path: Path, db_url: str, redis_url: str) -> Mapping[str, str]:
    return {
        **os.environ,
        "AETHER_HOME": str(tmp_path),
        "AETHER_DB_URL": db_url,
        "AETHER_REDIS_URL": redis_url,
        "AETHER_OFFLINE_ROOT": str(tmp_path / "offline"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[3]),
    }


MODULE = [sys.executable, "-m", "control_plane.ingestion.streaming"]
AETHERCTL = [sys.executable, "-m", "control_plane.cli.main", "materializer", "run"]


def start_materializer(
    args: list[str], env: Mapping[str, str], program: Sequence[str] = MODULE
) -> subprocess.Popen[str]:
    """``python -m control_plane.ingestion.streaming --view clicks ARGS`` (or ``program``'s), once it says
    it runs."""
    command = [*program, "--view", "clicks", *args]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    assert "aether materializer running" in process.stdout.readline()
    return process


def sigkill_once_applied(
    process: subprocess.Popen[str], client: redis.Redis, applied_key: str, at_least: int, timeout_s: float
) -> int:
    """SIGKILLs the materializer once ``at_least`` messages are applied (or at the timeout) and returns
    how many were applied when it died."""
    deadline = time.monotonic() + timeout_s
    while int(client.zcard(applied_key)) < at_least and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return int(client.zcard(applied_key))


def wait_until_handled(
    client: redis.Redis,
    keys: StateKeys,
    total: int,
    timeout_s: float,
    settled: Callable[[], bool] = lambda: True,
) -> None:
    """Waits (up to ``timeout_s``) until ``total`` messages are applied or rejected, the outbox is empty
    and ``settled()`` holds; the caller's assertions then say what went wrong if it never happened."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        handled = int(client.zcard(keys.applied)) + int(client.zcard(keys.rejected))
        if handled == total and client.llen(keys.outbox) == 0 and settled():
            return
        time.sleep(0.05)


# Short Kafka sessions: a consumer that left is out of the group in seconds, not the default 45.
FAST_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


def materialize_kafka(
    bootstrap: str,
    topic: str,
    view: pb.FeatureView,
    entity: pb.Entity,
    client: redis.Redis,
    sessions: sessionmaker[Session],
    offline_dir: Path,
    expected: int,
) -> int:
    """Runs a materializer over ``topic`` (a fresh consumer group) until it received ``expected``
    messages or 60 s passed, flushes it and closes its source; returns what it received."""
    options = MaterializerOptions(count=300, block_ms=50, reclaim_every_s=0.1, lag_every_s=0.1)
    source = KafkaSource(bootstrap, topic, options.group, "c1", FAST_GROUP)
    materializer = StreamMaterializer(
        view, entity, source, client, sessions, OfflineStore(str(offline_dir)), options
    )
    materializer.start()
    deadline = time.monotonic() + 60
    received = 0
    while received < expected and time.monotonic() < deadline:
        received += materializer.step().received
    materializer.flush()
    source.close()
    return received


USER = pb.Entity(name="user", join_keys=[pb.JoinKey(name="user_id", value_type=t.STRING)])


def spend_view(sessions: sessionmaker[Session], stream: str) -> tuple[pb.FeatureView, pb.Entity]:
    """A streaming view keyed by a STRING join key (``user_id``): the count and sum of ``amount``."""
    registry = FeatureRegistry(sessions)
    entity = registry.create_entity(USER)
    spec = pb.FeatureViewSpec(
        name="spend",
        entity="user",
        source=pb.Source(kind="stream", uri=stream),
        features=[
            pb.Feature(name="n_1h", value_type=t.INT64),
            pb.Feature(name="sum_1h", value_type=t.FLOAT64),
        ],
        aggregations=[
            pb.Aggregation(column="amount", function="count", window_seconds=3600, output="n_1h"),
            pb.Aggregation(column="amount", function="sum", window_seconds=3600, output="sum_1h"),
        ],
    )
    return registry.create_feature_view(spec, pb.FeatureViewMetadata()), entity
