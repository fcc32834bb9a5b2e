"""Batch ingestion and the stream readers judge a join key's value by one rule (a real redis-server, a
SQLite quarantine and offline store, librdkafka's mock Kafka cluster):

* an int key takes a value whose number is a whole number in range: ``1``, ``1.0`` and the text ``"1"``
  (or ``"1.0"``) name sensor 1, ``1.5`` is refused;
* a bool is no number: ``true`` for an int key (or a numeric feature) is refused, not read as 1;
* a string key takes text or an integer; a float or a bool is refused (a float's text depends on how it
  is written: Arrow wrote ``1e15`` as ``"1e+15"`` where the integer is ``"1000000000000000"``, and a
  Kafka JSON ``1.0`` became ``"1.0"`` where a batch's ``1.0`` became ``"1"``: two entities);
* a bool feature is a batch view's alone (no streaming view can have one), which takes a bool, a number
  whose value is 0 or 1, or the text Arrow reads as a bool.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
import redis

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2 as t
from clients.errors import InvalidArgument
from control_plane.db import read_session
from control_plane.ingestion import quarantine
from control_plane.ingestion.streaming.materializer import StreamMaterializer
from control_plane.ingestion.streaming.options import MaterializerOptions
from control_plane.ingestion.streaming.plan import plan_for
from control_plane.ingestion.streaming.redis_source import RedisStreamSource
from control_plane.offline.store import OfflineStore
from kernels.online_keys import online_key
from tests.integration.ingestion.conftest import Env
from tests.integration.ingestion.streaming_support import (
    USER,
    materialize_kafka,
    registry_db,
    run_until_idle,
    spend_view,
)
from tests.support.kafka_mock import KafkaMockCluster

OPTIONS = MaterializerOptions(count=500, block_ms=50, reclaim_every_s=0.1, lag_every_s=0.1)
TOPIC = "key-casts"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _climate(sensor_ids: pa.Array) -> pa.Table:
    n = len(sensor_ids)
    return pa.table(
        {
            "sensor_id": sensor_ids,
            "event_ts": pa.array([datetime.now(UTC)] * n, pa.timestamp("us", tz="UTC")),
            "temperature_c": pa.array([20.0] * n),
            "mode": pa.array([1] * n),
        }
    )


def test_batch_int_key_takes_whole_numbers_and_refuses_fractions_and_bools(env: Env) -> None:
    """A batch's ``1.0`` (float) and ``"1"`` (text) name sensor 1, ``1.5`` and ``True`` are refused;
    ``True`` was read as sensor 1."""
    chunks = [
        _climate(pa.array([1.0, 1.5])),
        _climate(pa.array(["1", "1.0", "1.5"])),
        _climate(pa.array([True])),
    ]
    outcome = env.service.ingest("climate", 1, chunks)

    assert (outcome.records_in, outcome.accepted, outcome.quarantined) == (6, 3, 3)
    held = env.service.list_quarantined(run_id=outcome.run_id)
    assert sorted(record.reason for record in held) == [
        "sensor_id: '1.5' not castable to int64 without loss",
        "sensor_id: 1.5 not castable to int64 without loss",
        "sensor_id: True is a boolean, not a number (int64)",
    ]
    stored = pa.Table.from_batches(env.offline.scan("climate", 1))
    assert stored.column("sensor_id").to_pylist() == [1, 1, 1]


def test_batch_numeric_feature_refuses_a_bool(env: Env) -> None:
    """``True`` for a float feature was stored as 1.0, for an int feature as 1: a schema mistake."""
    bool_temperature = _climate(pa.array([1])).set_column(2, "temperature_c", pa.array([True]))
    bool_mode = _climate(pa.array([2])).set_column(3, "mode", pa.array([True]))
    outcome = env.service.ingest("climate", 1, [bool_temperature, bool_mode])

    assert (outcome.records_in, outcome.accepted, outcome.quarantined) == (2, 0, 2)
    reasons = sorted(record.reason for record in env.service.list_quarantined(run_id=outcome.run_id))
    assert reasons == [
        "mode: True is a boolean, not a number (int32)",
        "temperature_c: True is a boolean, not a number (float)",
    ]


def test_kafka_int_key_agrees_with_batch(kafka: KafkaMockCluster, tmp_path: Path, redis_url: str) -> None:
    """A Kafka JSON ``1.0`` for an int key was refused ("'1.0' not castable to int64") where a batch's
    1.0 was accepted; now both name sensor 1. ``1.5`` and ``true`` are refused on both paths."""
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    now = _now()
    records = [
        f'{{"sensor_id": {value}, "event_ts": "{now}", "amount": 2.0}}'.encode()
        for value in ("1.0", "1.5", '"1"', "true", "2", "3e0")
    ]
    kafka.publish(TOPIC, records, keys=["k"] * len(records))
    materialize_kafka(kafka.bootstrap, TOPIC, view, entity, client, sessions, tmp_path / "off", expected=6)

    with read_session(sessions) as session:
        held = quarantine.list_quarantined(session, view="clicks")
        (run,) = quarantine.list_runs(session, "clicks")
    assert sorted(record.reason for record in held) == [
        "sensor_id: '1.5' not castable to int64 without loss",
        "sensor_id: 'true' not castable to int64 without loss",
    ]
    assert (run.records_in, run.accepted, run.quarantined) == (6, 4, 2)
    expected = sorted(online_key("sensor", [s], "clicks", 1) for s in ("1", "2", "3"))
    assert sorted(client.keys("ae:*")) == expected


def test_redis_stream_int_key_agrees_with_batch(tmp_path: Path, redis_url: str) -> None:
    """A Redis stream's fields are text, judged as a batch's text is: ``"1.0"`` names sensor 1 (what
    redis-py writes for a float 1.0), ``"1.5"`` and ``"true"`` are refused."""
    client = redis.Redis.from_url(redis_url)
    counts, reasons = _stream_sensor_ids(tmp_path, client, ("1.0", "1.5", "1", "true"))

    assert counts == (4, 2, 2)
    assert reasons == [
        "sensor_id: '1.5' not castable to int64 without loss",
        "sensor_id: 'true' not castable to int64 without loss",
    ]
    assert client.keys("ae:*") == [online_key("sensor", ["1"], "clicks", 1)]


def _stream_sensor_ids(
    tmp_path: Path, client: redis.Redis, sensor_ids: tuple[str, ...]
) -> tuple[tuple[int, int, int], list[str]]:
    """Writes one clicks event per sensor id to a Redis stream and materializes it: the run's (in,
    accepted, quarantined) and the quarantine reasons, sorted."""
    _url, sessions, view, entity = registry_db(tmp_path)
    now = _now()
    for value in sensor_ids:
        client.xadd("events:clicks", {"sensor_id": value, "event_ts": now, "amount": "2"})
    source = RedisStreamSource(client, "events:clicks", OPTIONS.group, "c1")
    materializer = StreamMaterializer(
        view, entity, source, client, sessions, OfflineStore(str(tmp_path / "offline")), OPTIONS
    )
    materializer.start()
    run_until_idle(materializer)
    with read_session(sessions) as session:
        counts = quarantine.run_counts(session, materializer.run.run_id)
        held = quarantine.list_quarantined(session, view="clicks")
    return (counts.records_in, counts.accepted, counts.quarantined), sorted(r.reason for r in held)


def test_a_number_past_decimals_exponent_range_is_quarantined_not_raised(
    tmp_path: Path, redis_url: str
) -> None:
    """Text of a whole number is read with ``Decimal``, whose exponent has a range: the text
    ``"1e999999999999999999999"`` raised ``decimal.InvalidOperation`` out of validation, and the stream
    materializer stopped on that one entry (read again, and again, on every start); a batch run failed
    whole. It is refused as any text that names no int64 is, and the entries around it are applied."""
    client = redis.Redis.from_url(redis_url)
    ids = ("1", "1e999999999999999999999", "-1e-999999999999999999999", "2")
    counts, reasons = _stream_sensor_ids(tmp_path, client, ids)

    assert counts == (4, 2, 2)
    assert reasons == [
        "sensor_id: '-1e-999999999999999999999' not castable to int64 without loss",
        "sensor_id: '1e999999999999999999999' not castable to int64 without loss",
    ]


def test_batch_int_key_refuses_a_number_past_decimals_exponent_range(env: Env) -> None:
    """The batch path of the same text: the run failed whole on ``decimal.InvalidOperation``."""
    outcome = env.service.ingest("climate", 1, [_climate(pa.array(["3", "1e999999999999999999999"]))])

    assert (outcome.records_in, outcome.accepted, outcome.quarantined) == (2, 1, 1)


def _profile_view(env: Env) -> None:
    env.registry.create_entity(USER)
    spec = pb.FeatureViewSpec(
        name="profile",
        entity="user",
        features=[pb.Feature(name="age", value_type=t.INT64)],
    )
    env.registry.create_feature_view(spec, pb.FeatureViewMetadata())


def _profile(user_ids: pa.Array) -> pa.Table:
    n = len(user_ids)
    return pa.table(
        {
            "user_id": user_ids,
            "event_ts": pa.array([datetime.now(UTC)] * n, pa.timestamp("us", tz="UTC")),
            "age": pa.array([30] * n),
        }
    )


def test_batch_string_key_takes_text_and_integers_and_refuses_floats_and_bools(env: Env) -> None:
    """A float's text was Arrow's (``1.0`` -> ``"1"``, ``1e15`` -> ``"1e+15"``), a bool's ``"true"``;
    the integer 10**15 is ``"1000000000000000"``: one number, two entities."""
    _profile_view(env)
    chunks = [
        _profile(pa.array(["alice", "1.0"])),
        _profile(pa.array([7, 10**15])),
        _profile(pa.array([1.0, 1e15])),
        _profile(pa.array([True])),
    ]
    outcome = env.service.ingest("profile", 1, chunks)

    assert (outcome.records_in, outcome.accepted, outcome.quarantined) == (7, 4, 3)
    reasons = sorted(record.reason for record in env.service.list_quarantined(run_id=outcome.run_id))
    why = "a string join key takes text or an integer"
    assert reasons == [
        f"user_id: 1.0 is a double; {why}",
        f"user_id: 1000000000000000.0 is a double; {why}",
        f"user_id: True is a bool; {why}",
    ]
    stored = pa.Table.from_batches(env.offline.scan("profile", 1))
    assert sorted(stored.column("user_id").to_pylist()) == ["1.0", "1000000000000000", "7", "alice"]


def test_batch_string_key_refuses_fractional_decimals_and_takes_whole_ones(env: Env) -> None:
    """A decimal's text carries its scale: 1 as ``decimal128(2, 1)`` was ``"1.0"``, as ``decimal128(3, 2)``
    ``"1.00"``, as an integer ``"1"``: one number, three entities, as with floats. A decimal of scale 0
    (a database's ``NUMERIC(20, 0)`` id) is written in digits alone, as an integer is, and is taken."""
    _profile_view(env)
    chunks = [
        _profile(pa.array([Decimal("1.0")], pa.decimal128(2, 1))),
        _profile(pa.array([Decimal("1.00")], pa.decimal128(3, 2))),
        _profile(pa.array([Decimal("12345678901234567890")], pa.decimal128(20, 0))),
        _profile(pa.array([1])),
    ]
    outcome = env.service.ingest("profile", 1, chunks)

    assert (outcome.records_in, outcome.accepted, outcome.quarantined) == (4, 2, 2)
    reasons = sorted(record.reason for record in env.service.list_quarantined(run_id=outcome.run_id))
    why = "a string join key takes text or an integer"
    assert reasons == [
        f"user_id: Decimal('1.0') is a decimal128(2, 1); {why}",
        f"user_id: Decimal('1.00') is a decimal128(3, 2); {why}",
    ]
    stored = pa.Table.from_batches(env.offline.scan("profile", 1))
    assert sorted(stored.column("user_id").to_pylist()) == ["1", "12345678901234567890"]


def test_kafka_string_key_agrees_with_batch(kafka: KafkaMockCluster, tmp_path: Path, redis_url: str) -> None:
    """A Kafka JSON ``1.0`` for a string key was the entity ``"1.0"`` (a batch's 1.0 was ``"1"``), a
    ``true`` the entity ``"true"``; both are refused now, as in a batch. A JSON string or integer is
    taken as it is written."""
    _url, sessions, _clicks, _sensor = registry_db(tmp_path)
    view, entity = spend_view(sessions, f"kafka://{kafka.bootstrap}/{TOPIC}")
    client = redis.Redis.from_url(redis_url)
    now = _now()
    records = [
        f'{{"user_id": {value}, "event_ts": "{now}", "amount": 2}}'.encode()
        for value in ('"alice"', '"1.0"', "7", "1.0", "1e15", "true")
    ]
    kafka.publish(TOPIC, records, keys=["k"] * len(records))
    materialize_kafka(kafka.bootstrap, TOPIC, view, entity, client, sessions, tmp_path / "off", expected=6)

    with read_session(sessions) as session:
        held = quarantine.list_quarantined(session, view="spend")
        (run,) = quarantine.list_runs(session, "spend")
    why = "a string join key takes text or an integer"
    assert sorted(record.reason for record in held) == [
        f"user_id: JSON number 1.0 is a float; {why}",
        f"user_id: JSON number 1000000000000000.0 is a float; {why}",
        f"user_id: JSON true is a bool; {why}",
    ]
    assert (run.records_in, run.accepted, run.quarantined) == (6, 3, 3)
    expected = sorted(online_key("user", [u], "spend", 1) for u in ("1.0", "7", "alice"))
    assert sorted(client.keys("ae:*")) == expected
    # Kept as the JSON values they came as (not their text), so a replay is refused again.
    payloads = sorted(json.dumps(json.loads(record.payload)["user_id"]) for record in held)
    assert payloads == ["1.0", "1000000000000000.0", "true"]


def _flags(active: pa.Array) -> pa.Table:
    n = len(active)
    return pa.table(
        {
            "sensor_id": pa.array(range(n)),
            "event_ts": pa.array([datetime.now(UTC)] * n, pa.timestamp("us", tz="UTC")),
            "active": active,
        }
    )


def test_a_bool_feature_is_a_batch_views_alone_and_takes_bools_and_the_numbers_0_and_1(env: Env) -> None:
    """No stream carries a bool feature, so batch and stream cannot judge one apart: every feature of a
    streaming view is an aggregation's output, and none may be a bool (its events' fields are numbers or
    counted text). A batch takes a bool, a number whose value is 0 or 1 (an int, or a float as pandas
    makes a nullable integer column) and the text Arrow reads as a bool; any other value is refused."""
    last_flag = pb.FeatureViewSpec(
        name="flag_stream",
        entity="sensor",
        source=pb.Source(kind="stream", uri="events:flags"),
        features=[pb.Feature(name="active", value_type=t.BOOL)],
        aggregations=[pb.Aggregation(column="on", function="last", window_seconds=60, output="active")],
    )
    with pytest.raises(InvalidArgument, match="'active' is bool, which cannot hold a last of 'on'"):
        env.registry.create_feature_view(last_flag, pb.FeatureViewMetadata())
    plain = pb.FeatureViewSpec(
        name="flag_stream", entity="sensor", source=last_flag.source, features=last_flag.features
    )
    with pytest.raises(InvalidArgument, match="has no aggregations; materialize it from a batch source"):
        plan_for(env.registry.create_feature_view(plain, pb.FeatureViewMetadata()))

    spec = pb.FeatureViewSpec(name="flags", entity="sensor", features=last_flag.features)
    env.registry.create_feature_view(spec, pb.FeatureViewMetadata())
    taken = [
        pa.array([True, False]),
        pa.array([1, 0]),
        pa.array([1.0, 0.0]),
        pa.array(["true", "false", "1", "0", "TRUE"]),
    ]
    refused = [pa.array([2, -1]), pa.array([0.5]), pa.array(["1.0", "yes", "on"])]
    outcome = env.service.ingest("flags", 1, [_flags(values) for values in (*taken, *refused)])

    assert (outcome.records_in, outcome.accepted, outcome.quarantined) == (17, 11, 6)
    reasons = sorted(record.reason for record in env.service.list_quarantined(run_id=outcome.run_id))
    assert reasons == sorted(
        f"active: {shown} not castable to bool without loss"
        for shown in ("2", "-1", "0.5", "'1.0'", "'yes'", "'on'")
    )
    stored = pa.Table.from_batches(env.offline.scan("flags", 1))
    expected = [True, False] * 3 + [True, False, True, False, True]
    assert sorted(stored.column("active").to_pylist()) == sorted(expected)
