"""The stream materializer against a real redis-server: windowed aggregates equal brute force over the
raw events, online equals the offline history, redelivery and malformed messages, a dropped connection,
and a SIGKILLed materializer process that restarts without double counting."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import redis

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2 as t
from control_plane.db import read_session
from control_plane.ingestion import quarantine
from control_plane.ingestion.streaming.materializer import StreamMaterializer
from control_plane.ingestion.streaming.options import MaterializerOptions
from control_plane.ingestion.streaming.redis_source import RedisStreamSource
from control_plane.ingestion.streaming.state_keys import StateKeys
from control_plane.offline.store import OfflineStore
from kernels.online_keys import online_key
from tests.integration.ingestion.conftest import Env
from tests.integration.ingestion.streaming_support import (
    AETHERCTL,
    STREAM,
    Event,
    assert_close,
    expected_online,
    materializer_env,
    publish,
    random_events,
    read_online,
    registry_db,
    run_until_idle,
    sigkill_once_applied,
    spend_view,
    start_materializer,
    wait_until_handled,
)

OPTIONS = MaterializerOptions(count=300, block_ms=20, reclaim_idle_ms=200, reclaim_every_s=0.1)


def test_aggregates_match_brute_force_and_offline_history_agrees(tmp_path: Path, redis_url: str) -> None:
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    events = random_events(1500, seed=3)
    publish(client, events)
    malformed = [
        {"sensor_id": "1", "event_ts": "2026-01-01T00:00:00", "amount": "1"},  # naive timestamp
        {"sensor_id": "1", "event_ts": events[0].ts.isoformat(), "amount": "abc"},
        {"sensor_id": "x", "event_ts": events[0].ts.isoformat(), "amount": "1"},
        {"sensor_id": "1", "event_ts": events[0].ts.isoformat(), "amount": "1", "colour": "red"},
        {"garbage": "\x00\xff"},
    ]
    for fields in malformed:
        client.xadd(STREAM, fields)  # type: ignore[arg-type]
    offline = OfflineStore(str(tmp_path / "offline"))
    source = RedisStreamSource(client, STREAM, OPTIONS.group, "c1")
    materializer = StreamMaterializer(view, entity, source, client, sessions, offline, OPTIONS)
    materializer.start()
    run_until_idle(materializer)

    expected = expected_online(events)
    assert_close(read_online(client, view, sorted(expected)), expected)

    # A batch recomputation from the offline history: each entity's latest row equals the online value.
    history = pa.Table.from_batches(list(offline.scan("clicks", 1)))
    assert history.num_rows == len(events)
    ordered = history.sort_by(
        [("sensor_id", "ascending"), ("event_ts", "ascending"), ("ingested_ts", "ascending")]
    )
    latest: dict[int, list[float]] = {}
    for row in ordered.to_pylist():
        latest[row["sensor_id"]] = [
            math.nan if row[f] is None else float(row[f]) for f in materializer.windows.plan.outputs
        ]
    assert_close(latest, read_online(client, view, sorted(expected)))

    with read_session(sessions) as session:
        counts = quarantine.run_counts(session, materializer.run.run_id)
        records = quarantine.list_quarantined(session, view="clicks")
    assert (counts.records_in, counts.accepted, counts.quarantined) == (len(events) + 5, len(events), 5)
    reasons = sorted(r.reason for r in records)
    assert any("not a time-zone-aware timestamp" in r for r in reasons)
    assert any("colour: unknown column" in r for r in reasons)
    assert any("amount: 'abc' not castable" in r for r in reasons)

    # Redelivery of already-applied messages changes nothing.
    before = read_online(client, view, sorted(expected))
    again = materializer.source.history(0, 100_000)
    stats = materializer.process(next(iter(again)))
    assert stats.duplicates == len(events) + 5 and stats.accepted == 0
    assert_close(read_online(client, view, sorted(expected)), before)
    with read_session(sessions) as session:
        assert quarantine.run_counts(session, materializer.run.run_id).records_in == len(events) + 5


def test_a_read_of_only_redelivered_messages_is_counted_as_duplicates(tmp_path: Path, redis_url: str) -> None:
    """A read whose messages were all applied before (the usual redelivery) returned before counting:
    aether_stream_records{outcome="duplicate"} and ``totals`` stayed at 0 however much was redelivered."""
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    events = random_events(10, seed=11, sensors=3)
    publish(client, events)
    source = RedisStreamSource(client, STREAM, OPTIONS.group, "c1")
    offline = OfflineStore(str(tmp_path / "offline"))
    materializer = StreamMaterializer(view, entity, source, client, sessions, offline, OPTIONS)
    materializer.start()
    run_until_idle(materializer)
    stats = materializer.process(next(iter(materializer.source.history(0, 1000))))
    assert (stats.received, stats.duplicates, stats.accepted) == (10, 10, 0)
    records = materializer.metrics.registry.get_sample_value
    assert records("aether_stream_records_total", {"view": "clicks", "outcome": "duplicate"}) == 10
    assert records("aether_stream_records_total", {"view": "clicks", "outcome": "accepted"}) == 10
    totals = materializer.totals
    assert (totals.received, totals.accepted, totals.duplicates) == (20, 10, 10)


def test_applied_ids_older_than_any_rebuild_are_trimmed_and_nothing_counts_twice(
    tmp_path: Path, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The applied / rejected id sets kept one member per message ever processed: Redis memory grew
    without bound. A commit now drops the ids older than where any rebuild starts (the group's resume
    point minus the longest window and the lateness), which a rebuild never reads and the group never
    delivers again; a restart still rebuilds exactly, and redelivery of the ids kept is still skipped."""
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    keys = StateKeys.of("clicks", 1, OPTIONS.group)
    now_ms = int(time.time() * 1000)
    old_ms = now_ms - 3 * 86_400_000  # before the 24 h window and the 1 h lateness of the newest
    old = [Event(1, datetime.fromtimestamp(old_ms / 1000, UTC), 1.0, f"{old_ms}-{i}") for i in range(5)]
    recent = [
        Event(
            i % 3,
            datetime.fromtimestamp((now_ms - 1000 + 10 * i) / 1000, UTC),
            2.0,
            f"{now_ms - 1000 + 10 * i}-0",
        )
        for i in range(6)
    ]
    options = MaterializerOptions(
        count=300, block_ms=20, reclaim_idle_ms=200, reclaim_every_s=0.1, trim_every_s=0.0
    )

    def materialize(events: list[Event]) -> StreamMaterializer:
        for event in events:
            client.xadd(STREAM, {"sensor_id": str(event.sensor), "event_ts": event.ts.isoformat(),
                                 "amount": str(event.amount)}, id=event.id)  # fmt: skip
        client.xadd(STREAM, {"garbage": "1"}, id=f"{int(events[-1].id.split('-')[0]) + 1}-0")  # rejected
        source = RedisStreamSource(client, STREAM, options.group, "c1")
        offline = OfflineStore(str(tmp_path / "offline"))
        materializer = StreamMaterializer(view, entity, source, client, sessions, offline, options)
        materializer.start()
        run_until_idle(materializer)
        return materializer

    materialize(old)
    assert client.zcard(keys.applied) == 5 and client.zcard(keys.rejected) == 1
    materialize(recent[:3])
    # This run rebuilds its windows from the ids kept (recent[:3]); its commits trim the old ones.
    materializer = materialize(recent[3:])
    assert sorted(i.decode() for i in client.zrange(keys.applied, 0, -1)) == sorted(e.id for e in recent)
    assert client.zcard(keys.rejected) == 2  # the two recent rejects; the old one is gone
    assert_close(read_online(client, view, [0, 1, 2]), expected_online(recent))

    # A redelivery of the ids kept is still skipped, changing nothing.
    stats = materializer.process(next(iter(materializer.source.history(now_ms - 2000, 1000))))
    assert (stats.duplicates, stats.accepted) == (len(recent) + 2, 0)
    assert_close(read_online(client, view, [0, 1, 2]), expected_online(recent))

    # A run with a longer lateness would rebuild from before the trim point, where whether a message was
    # applied is no longer known: it says so (its windows miss those events) rather than nothing.
    assert old_ms < int(client.get(keys.trimmed_below) or 0) <= now_ms
    longer = dataclasses.replace(options, lateness_s=10 * 86_400)
    source = RedisStreamSource(client, STREAM, options.group, "c1")
    with caplog.at_level(logging.WARNING, logger="aether.ingestion.stream"):
        StreamMaterializer(
            view, entity, source, client, sessions, OfflineStore(str(tmp_path / "offline")), longer
        ).start()
    assert "were trimmed by an earlier run with a shorter lateness or window" in caplog.text


def test_connection_drop_mid_stream_is_survived(tmp_path: Path, redis_url: str) -> None:
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    admin = redis.Redis.from_url(redis_url)
    events = random_events(2000, seed=5)
    source = RedisStreamSource(client, STREAM, OPTIONS.group, "c1")
    materializer = StreamMaterializer(
        view, entity, source, client, sessions, OfflineStore(str(tmp_path / "off")), OPTIONS
    )
    materializer.start()
    stop = threading.Event()
    failures: list[BaseException] = []

    def loop() -> None:
        try:
            while not stop.is_set():
                materializer.step()
        except BaseException as exc:  # surfaced by the assertion below
            failures.append(exc)

    worker = threading.Thread(target=loop)
    worker.start()
    for part in range(4):
        publish(admin, events[part * 500 : (part + 1) * 500])
        time.sleep(0.05)
        admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")  # type: ignore[no-untyped-call]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and admin.zcard(materializer.keys.applied) < len(events):
        time.sleep(0.05)
    stop.set()
    worker.join()
    assert not failures
    assert admin.zcard(materializer.keys.applied) == len(events)
    expected = expected_online(events)
    assert_close(read_online(admin, view, sorted(expected)), expected)


def test_sigkilled_materializer_restarts_without_double_counting(tmp_path: Path, redis_url: str) -> None:
    url, sessions, view, _entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    events = random_events(4000, seed=11, sensors=50)
    env = materializer_env(tmp_path, url, redis_url)

    def start() -> subprocess.Popen[str]:
        return start_materializer(["--count", "100", "--block-ms", "20", "--reclaim-idle-ms", "300"], env)

    keys = StateKeys.of("clicks", 1, "materializer")

    first = start()
    publish(client, events)
    client.xadd(STREAM, {"sensor_id": "1", "event_ts": "yesterday", "amount": "1"})
    killed_at = sigkill_once_applied(first, client, keys.applied, at_least=1000, timeout_s=20)
    assert 0 < killed_at < len(events)

    second = start()
    try:
        wait_until_handled(
            client, keys, len(events) + 1, timeout_s=30,
            settled=lambda: not client.xpending(STREAM, "materializer")["pending"],
        )  # fmt: skip
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=10)
    expected = expected_online(events)
    assert_close(read_online(client, view, sorted(expected)), expected)
    with read_session(sessions) as session:
        runs = quarantine.list_runs(session, "clicks")
    assert [(r.records_in, r.accepted, r.quarantined) for r in runs] == [(len(events) + 1, len(events), 1)]
    history = pa.Table.from_batches(list(OfflineStore(str(tmp_path / "offline")).scan("clicks", 1)))
    # Every accepted event has its history row (exact duplicates only from a crash mid-drain).
    distinct = history.group_by(["sensor_id", "event_ts", "ingested_ts"]).aggregate([])
    assert distinct.num_rows == len(events)
    assert pc.min(history.column("clicks_10m")).as_py() >= 1


def test_aetherctl_materializer_run_takes_the_materializers_flags(tmp_path: Path, redis_url: str) -> None:
    """``aetherctl materializer run --view V ...`` runs the same materializer (its flags used to be
    refused by the CLI's parser, so stream ingestion could not be started from aetherctl)."""
    url, _sessions, view, _entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    events = random_events(300, seed=5, sensors=10)
    publish(client, events)
    env = materializer_env(tmp_path, url, redis_url)
    process = start_materializer(["--count", "100", "--block-ms", "20"], env, program=AETHERCTL)
    try:
        wait_until_handled(client, StateKeys.of("clicks", 1, "materializer"), len(events), timeout_s=30)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    expected = expected_online(events)
    assert_close(read_online(client, view, sorted(expected)), expected)


def test_a_counted_field_may_be_any_type(tmp_path: Path, redis_url: str) -> None:
    """A field used only by count aggregations (a booking id like "b0") is counted, not quarantined for
    not being a number; a field also summed must still be a number."""
    from clients.aether.v1 import feature_registry_pb2 as pb
    from clients.aether.v1 import types_pb2 as t
    from control_plane.features.registry import FeatureRegistry

    _url, sessions, _clicks, entity = registry_db(tmp_path)
    spec = pb.FeatureViewSpec(
        name="bookings",
        entity="sensor",
        source=pb.Source(kind="stream", uri="events:bookings"),
        features=[
            pb.Feature(name="bookings_1h", value_type=t.INT64),
            pb.Feature(name="fare_sum_1h", value_type=t.FLOAT64),
        ],
        aggregations=[
            pb.Aggregation(column="booking_id", function="count", window_seconds=3600, output="bookings_1h"),
            pb.Aggregation(column="fare", function="sum", window_seconds=3600, output="fare_sum_1h"),
        ],
    )
    view = FeatureRegistry(sessions).create_feature_view(spec, pb.FeatureViewMetadata())
    client = redis.Redis.from_url(redis_url)
    now = datetime.now(UTC)
    for i in range(6):
        client.xadd("events:bookings", {"sensor_id": "7", "event_ts": now.isoformat(), "booking_id": f"b{i}",
                                         "fare": str(10.0 + i)})  # fmt: skip
    client.xadd("events:bookings", {"sensor_id": "7", "event_ts": now.isoformat(), "booking_id": "b9",
                                     "fare": "ten"})  # fmt: skip
    source = RedisStreamSource(client, "events:bookings", OPTIONS.group, "c1")
    offline = OfflineStore(str(tmp_path / "offline"))
    materializer = StreamMaterializer(view, entity, source, client, sessions, offline, OPTIONS)
    materializer.start()
    run_until_idle(materializer)
    assert read_online(client, view, [7]) == {7: [6.0, sum(10.0 + i for i in range(6))]}
    with read_session(sessions) as session:
        counts = quarantine.run_counts(session, materializer.run.run_id)
        (record,) = quarantine.list_quarantined(session, view="bookings")
    assert (counts.records_in, counts.accepted, counts.quarantined) == (7, 6, 1)
    assert "fare: 'ten' not castable" in record.reason


def test_infinite_amounts_are_quarantined_and_never_reach_a_window(tmp_path: Path, redis_url: str) -> None:
    """``inf`` and ``-inf`` in one window summed to NaN (written as a missing value) and ``1e309`` became
    ``inf``: every sum and mean holding them was poisoned for the window's length. They are quarantined
    with their reasons now, and the windows hold the finite events only."""
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    now = datetime.now(UTC)
    # The start of the previous 10-minute bucket: the events below share it (and so clicks_10m).
    bucket = now.replace(minute=now.minute - now.minute % 10, second=0, microsecond=0) - timedelta(minutes=10)
    amounts = {1: ["5", "inf", "-inf", "2"], 2: ["5", "1e309", "-Infinity", "1"]}
    for sensor, values in amounts.items():
        for k, amount in enumerate(values):
            ts = (bucket + timedelta(seconds=k)).isoformat()
            client.xadd(STREAM, {"sensor_id": str(sensor), "event_ts": ts, "amount": amount})
    source = RedisStreamSource(client, STREAM, OPTIONS.group, "c1")
    materializer = StreamMaterializer(
        view, entity, source, client, sessions, OfflineStore(str(tmp_path / "offline")), OPTIONS
    )
    materializer.start()
    run_until_idle(materializer)

    online = read_online(client, view, [1, 2])
    # clicks_10m, amount_sum_1h, amount_mean_1h, amount_max_24h, amount_last_1h over the finite events.
    assert online == {1: [2.0, 7.0, 3.5, 5.0, 2.0], 2: [2.0, 6.0, 3.0, 5.0, 1.0]}
    with read_session(sessions) as session:
        counts = quarantine.run_counts(session, materializer.run.run_id)
        reasons = sorted(r.reason for r in quarantine.list_quarantined(session, view="clicks"))
    assert (counts.records_in, counts.accepted, counts.quarantined) == (8, 4, 4)
    assert reasons == [
        "amount: '1e309' not castable to double without loss",
        "amount: -inf is not finite",
        "amount: -inf is not finite",
        "amount: inf is not finite",
    ]


def test_an_event_after_year_9999_in_utc_is_quarantined_and_its_neighbours_are_written(
    tmp_path: Path, redis_url: str
) -> None:
    """ "9999-12-31T23:00:00-05:00" is valid ISO 8601 but lands in year 10000 in UTC: writing its reason
    raised OverflowError, so the good events read with it were lost and a restarted materializer died
    on the same pending message again. It is quarantined now and the good events are applied."""
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    now = datetime.now(UTC).isoformat()
    for sensor, ts in ((1, now), (2, "9999-12-31T23:00:00-05:00"), (3, now)):
        client.xadd(STREAM, {"sensor_id": str(sensor), "event_ts": ts, "amount": "4"})
    source = RedisStreamSource(client, STREAM, OPTIONS.group, "c1")
    materializer = StreamMaterializer(
        view, entity, source, client, sessions, OfflineStore(str(tmp_path / "offline")), OPTIONS
    )
    materializer.start()
    run_until_idle(materializer)
    assert [values[0] for values in read_online(client, view, [1, 3]).values()] == [1.0, 1.0]
    assert client.get(online_key("sensor", ["2"], "clicks", 1)) is None
    with read_session(sessions) as session:
        counts = quarantine.run_counts(session, materializer.run.run_id)
        (record,) = quarantine.list_quarantined(session, view="clicks")
    assert (counts.records_in, counts.accepted, counts.quarantined) == (3, 2, 1)
    assert record.reason.startswith("event_ts: 10000-01-01T04:00:00+00:00 is more than 1 day")
    assert not client.xpending(STREAM, OPTIONS.group)["pending"]  # type: ignore[index]


def test_a_join_key_that_is_not_utf8_is_quarantined_not_merged(tmp_path: Path, redis_url: str) -> None:
    """Stream replies were decoded with U+FFFD for bytes that are not UTF-8, and a STRING join key
    accepts U+FFFD: users ``alice\\xff`` and ``alice\\xfe`` became one entity, their amounts summed.
    Each such message is quarantined now, its reason naming the field."""
    _url, sessions, _clicks, _sensor = registry_db(tmp_path)
    view, entity = spend_view(sessions, "events:spend")
    client = redis.Redis.from_url(redis_url)
    now = datetime.now(UTC).isoformat().encode()
    for user, amount in ((b"alice\xff", b"1"), (b"alice\xfe", b"100"), (b"bob", b"7")):
        client.xadd("events:spend", {b"user_id": user, b"event_ts": now, b"amount": amount})
    client.xadd("events:spend", {b"user_id": b"carol", b"event_ts": now, b"amount": b"5", b"note\xff": b"x"})
    source = RedisStreamSource(client, "events:spend", OPTIONS.group, "c1")
    materializer = StreamMaterializer(
        view, entity, source, client, sessions, OfflineStore(str(tmp_path / "offline")), OPTIONS
    )
    materializer.start()
    run_until_idle(materializer)
    assert sorted(client.keys("ae:*")) == [online_key("user", ["bob"], "spend", 1)]
    with read_session(sessions) as session:
        counts = quarantine.run_counts(session, materializer.run.run_id)
        records = quarantine.list_quarantined(session, view="spend")
    assert (counts.records_in, counts.accepted, counts.quarantined) == (4, 1, 3)
    assert sorted(r.reason for r in records) == [
        "field name b'note\\xff' is not valid UTF-8; note\\xff: unknown column",
        "user_id: b'alice\\xfe' is not valid UTF-8",
        "user_id: b'alice\\xff' is not valid UTF-8",
    ]
    # The copies keep the bytes as read (JSON "\\udcff"), so a replay of them finds them again.
    assert sorted(json.loads(r.payload).get("user_id") for r in records) == [
        "alice\udcfe",
        "alice\udcff",
        "carol",
    ]


@dataclass
class _Materialized:
    online: dict[int, list[float]]  # sensor 7's online values, in feature order
    counts: tuple[int, int, int]  # records in, accepted, quarantined
    reasons: list[str]  # sorted
    history: pa.Table  # the offline rows


def _materialize_field(
    tmp_path: Path,
    redis_url: str,
    view_name: str,
    field: str,
    outputs: list[tuple[str, str, int]],
    values: list[str],
) -> _Materialized:
    """Registers a streaming view of 1 h windows over ``field`` (``outputs``: feature, function, type),
    streams ``values`` of sensor 7 through the materializer and reads what it wrote and quarantined."""
    from clients.aether.v1 import feature_registry_pb2 as pb
    from control_plane.features.registry import FeatureRegistry

    _url, sessions, _clicks, entity = registry_db(tmp_path)
    stream = f"events:{view_name}"
    spec = pb.FeatureViewSpec(
        name=view_name,
        entity="sensor",
        source=pb.Source(kind="stream", uri=stream),
        features=[pb.Feature(name=name, value_type=value_type) for name, _, value_type in outputs],
        aggregations=[
            pb.Aggregation(column=field, function=function, window_seconds=3600, output=name)
            for name, function, _ in outputs
        ],
    )
    view = FeatureRegistry(sessions).create_feature_view(spec, pb.FeatureViewMetadata())
    client = redis.Redis.from_url(redis_url)
    now = datetime.now(UTC).isoformat()
    for value in values:
        client.xadd(stream, {"sensor_id": "7", "event_ts": now, field: value})
    source = RedisStreamSource(client, stream, OPTIONS.group, "c1")
    offline = OfflineStore(str(tmp_path / "offline"))
    materializer = StreamMaterializer(view, entity, source, client, sessions, offline, OPTIONS)
    materializer.start()
    run_until_idle(materializer)
    materializer.flush()
    with read_session(sessions) as session:
        counts = quarantine.run_counts(session, materializer.run.run_id)
        reasons = sorted(r.reason for r in quarantine.list_quarantined(session, view=view_name))
    return _Materialized(
        read_online(client, view, [7]),
        (counts.records_in, counts.accepted, counts.quarantined),
        reasons,
        pa.Table.from_batches(list(offline.scan(view_name, 1))),
    )


def test_an_integer_sum_that_no_longer_fits_its_type_quarantines_the_event(
    tmp_path: Path, redis_url: str
) -> None:
    """A sum stored as int32 was cast with numpy, wrapping 4000000000 around to -2147483648, and a
    fractional quantity summed into an integer was truncated; both were counted as accepted. The
    event that would push the sum out of range is quarantined now and not applied (the window goes on
    without it), and an integer-stored sum takes integral quantities only."""
    from clients.aether.v1 import types_pb2 as t

    outputs = [("qty_sum_1h", "sum", t.INT32), ("qty_mean_1h", "mean", t.FLOAT64)]
    done = _materialize_field(
        tmp_path, redis_url, "orders", "qty", outputs, ["2000000000", "2000000000", "1.5", "3000000000", "7"]
    )
    assert done.online == {7: [2000000007.0, 1000000003.5]}
    assert done.counts == (5, 2, 3)
    assert done.reasons == [
        "qty: '1.5' not castable to int32 without loss",
        "qty: '3000000000' not castable to int32 without loss",
        "qty_sum_1h: sum 4000000000 does not fit int32 (between -2147483648 and 2147483647); the event is"
        " not applied",
    ]
    assert done.history.column("qty_sum_1h").to_pylist() == [2000000000, 2000000007]


def test_an_int64_sum_is_exact_past_2_to_the_53(tmp_path: Path, redis_url: str) -> None:
    """int64 sums were the kernel's float64 sum checked against +-2**53 inclusive: 2**53 + 1 rounded to
    2**53 and was accepted (history 2**53, 2**53, 2**53 - 1 for 2**53, +1, -1). They are exact int64
    sums now: every running sum is right, and only a sum past int64 quarantines its event."""
    from clients.aether.v1 import types_pb2 as t

    outputs = [("qty_sum_1h", "sum", t.INT64)]
    big = str(2**53)
    values = [big, "1", "-1", *[big] * 1023, "5"]  # 1024 * 2**53 is 2**63: past int64
    done = _materialize_field(tmp_path, redis_url, "qty", "qty", outputs, values)
    sums = done.history.column("qty_sum_1h").to_pylist()
    assert sums[:3] == [2**53, 2**53 + 1, 2**53]
    assert sums[-2:] == [1023 * 2**53, 1023 * 2**53 + 5]
    blob = redis.Redis.from_url(redis_url).get(online_key("sensor", ["7"], "qty", 1))
    assert isinstance(blob, bytes)  # read_online gives floats: the stored int64 itself, exactly
    assert int(np.frombuffer(blob, dtype="<i8", offset=32)[0]) == 1023 * 2**53 + 5
    assert done.counts == (len(values), len(values) - 1, 1)
    assert done.reasons == [
        f"qty_sum_1h: sum {2**63} does not fit int64 (between {-(2**63)} and {2**63 - 1}); the event is"
        " not applied"
    ]


def test_a_float32_aggregate_that_would_be_infinite_quarantines_the_event(
    tmp_path: Path, redis_url: str
) -> None:
    """Events are checked as finite float64; a float32 feature holds less. 1e39 was cast to inf and written
    online and offline, counted as accepted; a float32 sum of values that fit can overflow the same way."""
    from clients.aether.v1 import types_pb2 as t

    outputs = [("amount_last_1h", "last", t.FLOAT32), ("amount_sum_1h", "sum", t.FLOAT32)]
    # 1e39 does not fit a float32; the second 2e38 takes the sum past its largest value.
    done = _materialize_field(
        tmp_path, redis_url, "amounts", "amount", outputs, ["2e38", "1e39", "2e38", "5"]
    )
    assert done.online == {7: [5.0, pytest.approx(2e38 + 5, rel=1e-6)]}
    assert done.counts == (4, 2, 2)
    assert done.reasons[0].startswith(
        "amount_last_1h: last 1e+39 does not fit float32 (between -3.4028234663852886e+38"
    )
    assert done.reasons[1].startswith("amount_sum_1h: sum 4e+38 does not fit float32")
    assert all(math.isfinite(v) for v in done.history.column("amount_sum_1h").to_pylist())


def test_a_float64_mean_whose_window_sum_overflows_quarantines_the_event(
    tmp_path: Path, redis_url: str
) -> None:
    """The mean of finite events 1.5e308, 1.5e308 was written as +inf online and offline, counted as
    accepted: the window's float64 sum overflowed and only a float64 ``sum`` output was range-checked.
    The event that would make the mean non-finite is quarantined now, as it is for a ``sum``."""
    from clients.aether.v1 import types_pb2 as t

    outputs = [("amt_mean_1h", "mean", t.FLOAT64), ("amt_max_1h", "max", t.FLOAT64)]
    done = _materialize_field(tmp_path, redis_url, "amts", "amt", outputs, ["1.5e308", "1.5e308", "1.0"])
    assert done.online == {7: [pytest.approx((1.5e308 + 1.0) / 2), 1.5e308]}
    assert done.counts == (3, 2, 1)
    assert done.reasons == [
        "amt_mean_1h: mean inf does not fit float64 (between -1.7976931348623157e+308 and"
        " 1.7976931348623157e+308); its window sum overflows; the event is not applied"
    ]
    means = done.history.column("amt_mean_1h").to_pylist()
    assert means == [1.5e308, pytest.approx((1.5e308 + 1.0) / 2)]


def test_counting_the_join_key_or_the_timestamp_field_counts_the_events(
    tmp_path: Path, redis_url: str
) -> None:
    """``count(sensor_id)`` where sensor_id is the join key (and ``count(event_ts)``) registered fine,
    then every materializer step raised KeyError: the field was declared twice in the events' schema.
    Such a count counts the events, as every event has its key and timestamp."""
    from clients.aether.v1 import feature_registry_pb2 as pb
    from clients.aether.v1 import types_pb2 as t
    from control_plane.features.registry import FeatureRegistry

    _url, sessions, _clicks, entity = registry_db(tmp_path)
    spec = pb.FeatureViewSpec(
        name="visits",
        entity="sensor",
        source=pb.Source(kind="stream", uri="events:visits"),
        features=[
            pb.Feature(name="by_key_1h", value_type=t.INT64),
            pb.Feature(name="by_ts_1h", value_type=t.FLOAT64),
        ],
        aggregations=[
            pb.Aggregation(column="sensor_id", function="count", window_seconds=3600, output="by_key_1h"),
            pb.Aggregation(column="event_ts", function="count", window_seconds=3600, output="by_ts_1h"),
        ],
    )
    view = FeatureRegistry(sessions).create_feature_view(spec, pb.FeatureViewMetadata())
    client = redis.Redis.from_url(redis_url)
    now = datetime.now(UTC).isoformat()
    for sensor in ("7", "7", "8", "x"):
        client.xadd("events:visits", {"sensor_id": sensor, "event_ts": now})
    source = RedisStreamSource(client, "events:visits", OPTIONS.group, "c1")
    materializer = StreamMaterializer(
        view, entity, source, client, sessions, OfflineStore(str(tmp_path / "offline")), OPTIONS
    )
    materializer.start()
    run_until_idle(materializer)
    assert read_online(client, view, [7, 8]) == {7: [2.0, 2.0], 8: [1.0, 1.0]}
    assert (materializer.totals.accepted, materializer.totals.quarantined) == (3, 1)


def test_an_event_before_year_1_is_quarantined_and_the_outbox_drains(tmp_path: Path, redis_url: str) -> None:
    """ "0000-06-01T00:00:00Z" passed validation and was committed to Redis; every outbox drain after
    it raised OverflowError naming its offline partition, restarts included: the materializer was stuck
    for good. It is quarantined now, and the events around it reach both stores."""
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    now = datetime.now(UTC).isoformat()
    for sensor, ts in ((1, now), (2, "0000-06-01T00:00:00Z"), (3, now)):
        client.xadd(STREAM, {"sensor_id": str(sensor), "event_ts": ts, "amount": "4"})
    offline = OfflineStore(str(tmp_path / "offline"))
    source = RedisStreamSource(client, STREAM, OPTIONS.group, "c1")
    materializer = StreamMaterializer(view, entity, source, client, sessions, offline, OPTIONS)
    materializer.start()
    run_until_idle(materializer)
    assert client.llen(materializer.keys.outbox) == 0
    assert [values[0] for values in read_online(client, view, [1, 3]).values()] == [1.0, 1.0]
    with read_session(sessions) as session:
        counts = quarantine.run_counts(session, materializer.run.run_id)
        (record,) = quarantine.list_quarantined(session, view="clicks")
    assert (counts.records_in, counts.accepted, counts.quarantined) == (3, 2, 1)
    assert record.reason == (
        "event_ts: 0000-06-01T00:00:00+00:00 is outside the event times the stores hold (years 1 to 9999,"
        " UTC)"
    )
    stored = pa.Table.from_batches(list(offline.scan("clicks", view.version)))
    assert sorted(stored.column("sensor_id").to_pylist()) == [1, 3]


def test_a_run_id_past_its_column_is_bounded_and_every_drain_commits_on_postgresql(
    postgresql_env: Env,
) -> None:
    """A 100-character view (names may have 128) read from a stream named after it made the run id
    "stream:<stream>:<group>:<view>:v1" longer than VARCHAR(200): on PostgreSQL every outbox drain raised
    DataError, and each retry wrote the offline history again (duplicate Parquet files). The id is now
    its start plus a hash, the same on every restart."""
    env = postgresql_env
    name = "clicks_" + "x" * 93
    stream = f"events:{name}"
    spec = pb.FeatureViewSpec(
        name=name,
        entity="sensor",
        source=pb.Source(kind="stream", uri=stream),
        features=[pb.Feature(name="clicks_10m", value_type=t.INT64)],
        aggregations=[
            pb.Aggregation(column="amount", function="count", window_seconds=600, output="clicks_10m")
        ],
    )
    view = env.registry.create_feature_view(spec, pb.FeatureViewMetadata())
    entity = env.registry.get_entity("sensor")

    def materializer(consumer: str) -> StreamMaterializer:
        source = RedisStreamSource(env.client, stream, OPTIONS.group, consumer)
        return StreamMaterializer(view, entity, source, env.client, env.sessions, env.offline, OPTIONS)

    first = materializer("c1")
    assert len(first.run.run_id) == 200
    assert first.run.run_id.startswith(f"stream:{stream}:")
    env.client.xadd(stream, {"sensor_id": "1", "event_ts": datetime.now(UTC).isoformat(), "amount": "5"})
    first.start()
    run_until_idle(first)
    first.flush()
    assert env.client.llen(first.keys.outbox) == 0
    restarted = materializer("c2")
    assert restarted.run.run_id == first.run.run_id
    restarted.start()
    with read_session(env.sessions) as session:
        counts = quarantine.run_counts(session, first.run.run_id)
    assert (counts.records_in, counts.accepted, counts.quarantined) == (1, 1, 0)
    assert len(env.offline.files(name, view.version)) == 1  # written once, not again by each retry
