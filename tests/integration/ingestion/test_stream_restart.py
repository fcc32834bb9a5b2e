"""A restarted materializer rebuilds the windows its backlog still needs, however long it was down.

Windows end at each entity's newest event time, so a rebuild anchored at the clock forgot the events
applied just before a backlog older than the longest window plus the lateness. "Long after" is simulated
with event times and stream positions in the past (no sleeping). Real redis-server, SQLite, Parquet
offline store; Kafka through librdkafka's mock cluster (tests/support/kafka_mock.py)."""

from __future__ import annotations

import math
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2 as t
from control_plane.features.registry import FeatureRegistry
from control_plane.ingestion.streaming.kafka_source import KafkaSource
from control_plane.ingestion.streaming.materializer import StreamMaterializer
from control_plane.ingestion.streaming.options import MaterializerOptions
from control_plane.ingestion.streaming.redis_source import RedisStreamSource
from control_plane.ingestion.streaming.source import id_sequence
from control_plane.offline.store import OfflineStore
from tests.integration.ingestion.streaming_support import (
    FAST_GROUP,
    STREAM,
    Event,
    assert_close,
    event_fields,
    expected_online,
    read_online,
    registry_db,
)
from tests.support.kafka_mock import KafkaMockCluster

HOUR_MS = 3_600_000
# Long enough ago that every event is older than the clicks view's longest window (24 h) plus the
# default lateness (1 h), measured from now: the backlog of a materializer that was down for a day. On
# the hour, so that the events below share one 10-minute bucket whenever the test runs.
LONG_AGO = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=30)


def clicks_events() -> list[Event]:
    """Three clicks of sensor 7 within two minutes, long ago; their ids are set when published."""
    return [Event(7, LONG_AGO + timedelta(seconds=40 * i), 1.5 + i) for i in range(3)]


def publish_at_event_time(client: redis.Redis, stream: str, events: list[Event]) -> None:
    """Each event appended with an explicit id at its event time: it reached the stream on time, long
    ago (what a backlog looks like to a restarted materializer)."""
    for event in events:
        ms = int(event.ts.timestamp() * 1000)
        event.id = client.xadd(stream, event_fields(event), id=f"{ms}-0").decode()  # type: ignore[arg-type, union-attr]


def history_rows(offline: OfflineStore, view: str, outputs: Sequence[str]) -> dict[int, list[list[float]]]:
    """Per sensor, the aggregates of each offline history row (null as NaN), in the order written."""
    table = pa.Table.from_batches(list(offline.scan(view, 1)))
    ordered = table.sort_by([("sensor_id", "ascending"), ("ingested_ts", "ascending")])
    rows: dict[int, list[list[float]]] = {}
    for row in ordered.to_pylist():
        values = [math.nan if row[name] is None else float(row[name]) for name in outputs]
        rows.setdefault(int(row["sensor_id"]), []).append(values)
    return rows


def test_a_restart_long_after_rebuilds_the_windows_of_the_backlog(tmp_path: Path, redis_url: str) -> None:
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    events = clicks_events()
    publish_at_event_time(client, STREAM, events)
    offline = OfflineStore(str(tmp_path / "offline"))
    options = MaterializerOptions(count=2, block_ms=10)

    def materializer(consumer: str) -> StreamMaterializer:
        source = RedisStreamSource(client, STREAM, options.group, consumer)
        return StreamMaterializer(view, entity, source, client, sessions, offline, options)

    first = materializer("c1")
    first.start()
    assert first.process(first.source.read(2, 10)).accepted == 2
    first.flush()  # then it stops; its successor starts a day later
    second = materializer("c2")
    second.start()
    assert second.process(second.source.read(2, 10)).accepted == 1
    second.flush()

    expected = expected_online(events)
    assert expected[7][0] == 3  # clicks_10m counts the two events applied before the restart
    assert_close(read_online(client, view, [7]), expected)
    history = history_rows(offline, "clicks", second.windows.plan.outputs)
    assert_close({7: history[7][-1]}, expected)  # the offline row of the third event agrees


# -- Kafka -----------------------------------------------------------------------------------------------

TOPIC = "clicks-restart"


def step_until(materializer: StreamMaterializer, accepted: int, timeout_s: float = 30.0) -> None:
    """Steps until ``accepted`` messages in all were accepted (the first reads wait for the group)."""
    deadline = time.monotonic() + timeout_s
    while materializer.totals.accepted < accepted and time.monotonic() < deadline:
        materializer.step()
    assert materializer.totals.accepted == accepted


def test_a_restart_long_after_rebuilds_the_windows_of_the_backlog_on_kafka(
    kafka: KafkaMockCluster, tmp_path: Path, redis_url: str
) -> None:
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    events = clicks_events()
    fields = [event_fields(e) for e in events]
    stamps = [int(e.ts.timestamp() * 1000) for e in events]  # produced on time, long ago
    for event, message_id in zip(events, kafka.publish(TOPIC, fields, ["7"] * 3, stamps), strict=True):
        event.id = message_id
    offline = OfflineStore(str(tmp_path / "offline"))
    options = MaterializerOptions(count=1, block_ms=50, lag_every_s=0.1)

    first_source = KafkaSource(kafka.bootstrap, TOPIC, options.group, "c1", FAST_GROUP)
    first = StreamMaterializer(view, entity, first_source, client, sessions, offline, options)
    first.start()
    step_until(first, 2)
    first.flush()
    first_source.close()  # leaves the group: the successor gets the partition at once

    second_source = KafkaSource(kafka.bootstrap, TOPIC, options.group, "c2", FAST_GROUP)
    # The group resumes at the third record, produced at its event time.
    assert second_source.resume_ms() == stamps[2]
    second = StreamMaterializer(view, entity, second_source, client, sessions, offline, options)
    second.start()
    step_until(second, 1)
    second.flush()
    second_source.close()

    expected = expected_online(events)
    assert expected[7][0] == 3
    assert_close(read_online(client, view, [7]), expected)


# -- where a Redis group resumes ------------------------------------------------------------------------


def test_a_redis_group_resumes_at_its_oldest_pending_entry_else_after_its_last_delivered(
    redis_url: str,
) -> None:
    client = redis.Redis.from_url(redis_url)
    source = RedisStreamSource(client, "events:resume", "g", "c1")
    assert source.resume_ms() == 0  # delivered nothing yet
    for ms in (1000, 2000, 3000, 4000):
        client.xadd("events:resume", {"n": str(ms)}, id=f"{ms}-0")
    assert source.resume_ms() == 0
    first = source.read(2, 10)
    assert source.resume_ms() == 1000  # both pending: the oldest
    source.ack(first.ids[:1])
    assert source.resume_ms() == 2000
    source.ack(first.ids[1:])
    assert source.resume_ms() == 2000  # caught up to what it was delivered: the rest comes after
    source.close()


# -- arbitrary restart points against brute force ------------------------------------------------------

BUCKET_S = 600
LATENESS_S = 900
TAPS = pb.FeatureViewSpec(
    name="taps",
    entity="sensor",
    source=pb.Source(kind="stream", uri="events:taps"),
    features=[
        pb.Feature(name="taps_10m", value_type=t.INT64),
        pb.Feature(name="sum_1h", value_type=t.FLOAT64),
        pb.Feature(name="mean_30m", value_type=t.FLOAT64),
        pb.Feature(name="min_20m", value_type=t.FLOAT64),
        pb.Feature(name="max_1h", value_type=t.FLOAT64),
        pb.Feature(name="last_1h", value_type=t.FLOAT64),
    ],
    aggregations=[
        pb.Aggregation(column="amount", function="count", window_seconds=600, output="taps_10m"),
        pb.Aggregation(column="amount", function="sum", window_seconds=3600, output="sum_1h"),
        pb.Aggregation(column="amount", function="mean", window_seconds=1800, output="mean_30m"),
        pb.Aggregation(column="amount", function="min", window_seconds=1200, output="min_20m"),
        pb.Aggregation(column="amount", function="max", window_seconds=3600, output="max_1h"),
        pb.Aggregation(column="amount", function="last", window_seconds=3600, output="last_1h"),
    ],
)
WINDOWS = (("count", 600), ("sum", 3600), ("mean", 1800), ("min", 1200), ("max", 3600), ("last", 3600))


@dataclass(frozen=True)
class Tap:
    sensor: int
    ts_s: int  # event time, seconds after the base
    delay_ms: int  # from event time to reaching the stream: within the lateness
    amount: int  # whole numbers: sums are exact in any order


@dataclass(frozen=True)
class Life:
    """One materializer's life: it takes over (reclaiming what its predecessor left pending), processes
    ``quota`` new messages, then reads ``pending`` more and dies before processing them."""

    quota: int
    pending: int


taps = st.builds(
    Tap,
    sensor=st.integers(0, 2),
    ts_s=st.integers(0, 5 * 3600),
    delay_ms=st.integers(0, LATENESS_S * 1000),
    amount=st.integers(-50, 50),
)
lives = st.lists(st.builds(Life, quota=st.integers(0, 12), pending=st.integers(0, 3)), max_size=5)


def brute_force(rows: list[tuple[Tap, int, int]]) -> dict[int, list[list[float]]]:
    """Per sensor, the aggregates emitted after each of its events (applied in stream order), from the
    raw events: each window is the buckets ``(b_T - w, b_T]`` of the sensor's newest event time ``T``
    so far (see kernels/windows.py). ``rows``: (tap, event time µs, id sequence) in stream order."""
    emitted: dict[int, list[list[float]]] = {}
    for i, (tap, _us, _seq) in enumerate(rows):
        mine = [(us, seq, r.amount) for r, us, seq in rows[: i + 1] if r.sensor == tap.sensor]
        current = max(us for us, _, _ in mine) // (BUCKET_S * 10**6)
        out: list[float] = []
        for function, window_s in WINDOWS:
            width = window_s // BUCKET_S
            inside = [(us, seq, a) for us, seq, a in mine if current - width < us // (BUCKET_S * 10**6)]
            values = [float(a) for _, _, a in inside]
            if function == "count":
                out.append(float(len(values)))
            elif function == "sum":
                out.append(sum(values))
            elif not values:
                out.append(math.nan)
            elif function == "mean":
                out.append(sum(values) / len(values))
            elif function == "min":
                out.append(min(values))
            elif function == "max":
                out.append(max(values))
            else:
                out.append(float(max(inside)[2]))
        emitted.setdefault(tap.sensor, []).append(out)
    return emitted


@dataclass
class TapsRegistry:
    sessions: sessionmaker[Session]
    view: pb.FeatureView
    entity: pb.Entity


@pytest.fixture
def taps_registry(tmp_path: Path) -> TapsRegistry:
    _url, sessions, _clicks, entity = registry_db(tmp_path)
    view = FeatureRegistry(sessions).create_feature_view(TAPS, pb.FeatureViewMetadata())
    return TapsRegistry(sessions, view, entity)


def publish_taps(
    client: redis.Redis, stream: str, base_ms: int, events: list[Tap]
) -> list[tuple[Tap, int, int]]:
    """Appends the events in the order they reach the stream, each with an explicit id at its arrival;
    returns (tap, event time µs, id sequence) in stream order."""
    arriving = sorted(events, key=lambda e: e.ts_s * 1000 + e.delay_ms)
    rows: list[tuple[Tap, int, int]] = []
    last = (-1, 0)
    pipeline = client.pipeline(transaction=False)
    for tap in arriving:
        ms = base_ms + tap.ts_s * 1000 + tap.delay_ms
        position = (ms, last[1] + 1) if ms == last[0] else (ms, 0)
        last = position
        message_id = f"{position[0]}-{position[1]}"
        event_ts = datetime.fromtimestamp((base_ms + tap.ts_s * 1000) / 1000, UTC)
        fields = {"sensor_id": str(tap.sensor), "event_ts": event_ts.isoformat(), "amount": str(tap.amount)}
        pipeline.xadd(stream, fields, id=message_id)  # type: ignore[arg-type]
        rows.append((tap, (base_ms + tap.ts_s * 1000) * 1000, id_sequence(message_id)))
    pipeline.execute()
    return rows


def live(materializer: StreamMaterializer, life: Life | None, page: int, undelivered: int) -> int:
    """Runs one life (``None``: until the stream is drained); returns how many messages are left that
    the group was never delivered. Reads never wait on an empty stream (a blocked read lasts until the
    server's next timer tick, tens of milliseconds)."""
    source = materializer.source
    while reclaimed := source.reclaim(0, page):
        materializer.process(reclaimed)
    quota = undelivered if life is None else min(life.quota, undelivered)
    while quota:
        batch = source.read(min(page, quota), 10)
        materializer.process(batch)
        quota -= len(batch)
        undelivered -= len(batch)
    materializer.flush()
    if life is not None and min(life.pending, undelivered):
        dying = source.read(min(life.pending, undelivered), 10)  # delivered, never processed: it dies here
        undelivered -= len(dying)
    return undelivered


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(taps, min_size=1, max_size=30), lives=lives, page=st.integers(1, 8))
def test_aggregates_across_arbitrary_restarts_equal_brute_force(
    taps_registry: TapsRegistry, redis_url: str, events: list[Tap], lives: list[Life], page: int
) -> None:
    client = redis.Redis.from_url(redis_url)
    # Every example its own stream, group, offline root and online values: nothing carries over between
    # examples (an earlier example's value, when its events are later, is rightly never overwritten).
    stream, group = f"events:taps:{uuid.uuid4().hex}", uuid.uuid4().hex
    online_keys = list(client.scan_iter(match="ae:*:taps:v*"))
    if online_keys:
        client.delete(*online_keys)
    base_ms = int(time.time() * 1000) - 12 * HOUR_MS  # all of it long before the restarts
    rows = publish_taps(client, stream, base_ms, events)
    options = MaterializerOptions(group=group, lateness_s=LATENESS_S)
    with tempfile.TemporaryDirectory() as folder:
        offline = OfflineStore(folder)
        undelivered = len(events)
        for index, life in enumerate([*lives, None]):
            source = RedisStreamSource(client, stream, group, f"c{index}")
            registry = taps_registry
            materializer = StreamMaterializer(
                registry.view, registry.entity, source, client, registry.sessions, offline, options
            )
            materializer.start()
            undelivered = live(materializer, life, page, undelivered)
            source.close()
        found = history_rows(offline, "taps", [f.name for f in TAPS.features])

    expected = brute_force(rows)
    assert found.keys() == expected.keys()
    for sensor, want in expected.items():
        assert len(found[sensor]) == len(want)
        assert_close(dict(enumerate(found[sensor])), dict(enumerate(want)))
    # Online: each sensor's latest aggregates.
    online = read_online(client, taps_registry.view, sorted(expected))
    assert_close(online, {sensor: want[-1] for sensor, want in expected.items()})
