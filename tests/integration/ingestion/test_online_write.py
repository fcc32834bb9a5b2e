"""Batch ingestion's online write against a real redis-server: the latest row per entity goes online
unless a value with a later event time is there, decided inside Redis so that two concurrent ingests
cannot put an older value back; expiry as the online writer's."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.errors import FailedPrecondition, Unavailable
from control_plane.db import read_session, write_session
from control_plane.features.online_cleanup import deleted_view_fence
from control_plane.features.online_writer import EXPIRY_TTL_FACTOR
from control_plane.ingestion.online import online_view_version, write_latest
from control_plane.ingestion.tables import QuarantineRow
from control_plane.offline.historical import get_historical_features
from kernels.online_keys import online_key
from kernels.packed_blob import decode, encode
from tests.integration.ingestion.conftest import Env
from tests.integration.ingestion.pausing_redis import PausingRedis

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
KEY = online_key("sensor", ["7"], "climate", 1)
TIMESTAMP = pa.timestamp("us", tz="UTC")


def rows(event_us: int, temperature: float, sensor: int = 7, ingested_us: int | None = None) -> pa.Table:
    """One row of sensor ``sensor``; with ``ingested_us``, the ``ingested_ts`` the offline store keeps."""
    table = pa.table(
        {
            "sensor_id": pa.array([sensor], pa.int64()),
            "event_ts": pa.array([event_us], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "temperature_c": pa.array([temperature], pa.float32()),
            "mode": pa.array([1], pa.int32()),
        }
    )
    if ingested_us is None:
        return table
    return table.append_column(
        "ingested_ts", pa.array([ingested_us], pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    )


def written_at(client: redis.Redis, view: pb.FeatureView) -> int:
    """The write time (µs) in sensor 7's online value: its row's ingestion time."""
    blob = client.get(KEY)
    assert isinstance(blob, bytes)
    online = online_view_version(view)
    return decode(blob, online.layout, view.schema_fingerprint, len(online.columns)).write_ts_us


def online(client: redis.Redis, view: pb.FeatureView) -> tuple[int, float]:
    """(event time in µs, temperature) of sensor 7's online value."""
    blob = client.get(KEY)
    assert isinstance(blob, bytes)
    online = online_view_version(view)
    decoded = decode(blob, online.layout, view.schema_fingerprint, len(online.columns))
    return decoded.event_ts_us, float(decoded.values[0][0])


def test_an_older_row_never_replaces_a_fresher_one_and_a_tie_or_newer_does(env: Env) -> None:
    view = env.registry.get_feature_view("climate")
    june = (datetime(2025, 6, 1, tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
    assert write_latest(env.client, view, ["sensor_id"], rows(june, 2.0)) == 1
    assert write_latest(env.client, view, ["sensor_id"], rows(june - 1, 1.0)) == 0
    assert online(env.client, view) == (june, 2.0)
    assert write_latest(env.client, view, ["sensor_id"], rows(june, 3.0)) == 1  # a tie: the later write
    assert write_latest(env.client, view, ["sensor_id"], rows(june + 1, 4.0)) == 1
    assert online(env.client, view) == (june + 1, 4.0)


def test_a_run_writing_a_version_deleted_under_it_writes_no_online_value(env: Env) -> None:
    """A batch run that began before its view was deleted wrote its online values at its end, after the
    delete's cleanup had scanned for the version's keys: with no TTL they stayed for ever. The cleanup's
    fence now refuses the write inside the same script that would make it."""
    view = env.registry.get_feature_view("climate")
    env.client.set(deleted_view_fence("climate", view.version), b"1")  # as the cleanup sets it
    with pytest.raises(FailedPrecondition, match="'climate' version 1 was deleted while this run wrote it"):
        write_latest(env.client, view, ["sensor_id"], rows(1, 2.0))
    assert env.client.exists(KEY) == 0
    env.client.delete(deleted_view_fence("climate", view.version))
    assert write_latest(env.client, view, ["sensor_id"], rows(1, 2.0)) == 1


def test_a_later_value_of_another_schema_is_replaced(env: Env) -> None:
    """A blob of another schema fingerprint (left by a deleted view of the same name, say) was kept when
    its event time was later: it blocked every write of the key and each read failed with DATA_LOSS."""
    view = env.registry.get_feature_view("climate")
    june = (datetime(2025, 6, 1, tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
    env.client.set(KEY, encode([9.0], np.dtype(np.float64), view.schema_fingerprint ^ 1, june + 1, 0))
    assert write_latest(env.client, view, ["sensor_id"], rows(june, 2.0)) == 1
    assert online(env.client, view) == (june, 2.0)
    assert write_latest(env.client, view, ["sensor_id"], rows(june - 1, 1.0)) == 0  # same schema: kept


@pytest.mark.parametrize("garbage", [b"", b"AE", b"XX" + bytes(40), b"AE\x02" + bytes(40)])
def test_a_value_that_is_not_a_blob_is_replaced(env: Env, garbage: bytes) -> None:
    view = env.registry.get_feature_view("climate")
    env.client.set(KEY, garbage)
    assert write_latest(env.client, view, ["sensor_id"], rows(5, 1.0)) == 1
    assert online(env.client, view) == (5, 1.0)
    env.client.delete(KEY)
    env.client.hset(KEY, "field", "value")  # not even a string
    assert write_latest(env.client, view, ["sensor_id"], rows(5, 1.0)) == 1
    assert online(env.client, view) == (5, 1.0)


near_words = st.sampled_from([0, 2**31, 2**32, 2**52, 2**53, 2**62]).flatmap(
    lambda edge: st.integers(-edge - 2, edge + 2)
)
event_times = st.one_of(near_words, st.integers(-(2**62), 2**62))


# The registry and Redis are shared by the examples on purpose: each example deletes the one key it uses.
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=event_times, second=event_times)
def test_event_times_compare_exactly_across_32_bit_words_and_sign(env: Env, first: int, second: int) -> None:
    """The script compares the int64 event time as two 32-bit words; the later one stays, whatever the
    values (negative, beyond 2**53), and a tie goes to the second write."""
    view = env.registry.get_feature_view("climate")
    env.client.delete(KEY)
    write_latest(env.client, view, ["sensor_id"], rows(first, 1.0))
    written = write_latest(env.client, view, ["sensor_id"], rows(second, 2.0))
    assert written == (second >= first)
    assert online(env.client, view) == ((second, 2.0) if second >= first else (first, 1.0))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.tuples(event_times, event_times), second=st.tuples(st.sampled_from([0, 1, -1]), event_times))
def test_a_tie_of_event_times_goes_to_the_later_ingestion_as_in_training_sets(
    env: Env, first: tuple[int, int], second: tuple[int, int]
) -> None:
    """A replayed online part of an older run put its value over a later run's of the same event time,
    while training sets (``keep_better``: event time, then ingestion time) returned the later run's. The
    blob's write time is now the row's ingestion time, and the script breaks a tie by it (exactly, as
    two 32-bit words); a tie of both goes to the second write."""
    view = env.registry.get_feature_view("climate")
    env.client.delete(KEY)
    event, ingested = first
    second_event = event + second[0]  # a tie of event times in a third of the examples, at least
    write_latest(env.client, view, ["sensor_id"], rows(event, 1.0, ingested_us=ingested))
    written = write_latest(env.client, view, ["sensor_id"], rows(second_event, 2.0, ingested_us=second[1]))
    wins = (second_event, second[1]) >= (event, ingested)  # the reference: the join's order
    assert written == wins
    assert online(env.client, view) == ((second_event, 2.0) if wins else (event, 1.0))


def test_of_rows_written_together_a_tie_of_event_times_goes_to_the_later_ingestion(env: Env) -> None:
    """Online_pending records of several replays are completed in one write; of one sensor's rows with
    the same event time, the later ingestion's is written, not the later row's (the join's order)."""
    view = env.registry.get_feature_view("climate")
    env.client.delete(KEY)
    together = pa.concat_tables([rows(5, 1.0, ingested_us=200), rows(5, 2.0, ingested_us=100)])
    assert write_latest(env.client, view, ["sensor_id"], together) == 1
    assert (online(env.client, view), written_at(env.client, view)) == ((5, 1.0), 200)


def test_a_replayed_older_run_does_not_take_a_tie_from_a_later_one(env: Env) -> None:
    """The reviewer's case, end to end: run A (temperature 1.0) is stored offline but Redis refuses its
    online write; run B corrects it at the same event time (2.0); then A's online part is replayed. Online
    and the training set agree on B's value (they disagreed: online 1.0, offline 2.0)."""
    event = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)

    def run(temperature: float) -> pa.Table:
        return pa.table(
            {
                "sensor_id": pa.array([7], pa.int64()),
                "event_ts": pa.array([event], pa.timestamp("us", tz="UTC")),
                "temperature_c": pa.array([temperature], pa.float32()),
                "mode": pa.array([1], pa.int32()),
            }
        )

    env.client.config_set("maxmemory", 1)  # with the default noeviction policy every write fails
    try:
        with pytest.raises(FailedPrecondition, match="stored offline and counted"):
            env.service.ingest("climate", 1, [run(1.0)])
    finally:
        env.client.config_set("maxmemory", 0)
    env.service.ingest("climate", 1, [run(2.0)])
    pending = env.service.list_quarantined(status="online_pending")
    assert len(pending) == 1
    assert env.service.replay([record.id for record in pending], {}).replayed == [pending[0].id]

    view = env.registry.get_feature_view("climate")
    assert online(env.client, view) == (int(event.timestamp() * 1_000_000), 2.0)
    labels = pa.table({"sensor_id": [7], "event_ts": pa.array([event + timedelta(seconds=1)], TIMESTAMP)})
    training = get_historical_features(
        env.offline, env.registry, labels, ["climate:temperature_c"], record=False
    )
    assert training.table.column("climate:temperature_c").to_pylist() == [2.0]


def replayed_online_pending(env: Env, event: datetime) -> int:
    """Sensor 7's record quarantined (mode 9) at ``event`` and replayed corrected (temperature 30.0, mode
    1) while Redis refuses writes: stored offline and counted, its online value not written. Its id."""
    payload = {"sensor_id": 7, "event_ts": event.isoformat(), "temperature_c": 30.0, "mode": 9}
    record_id = env.quarantine("climate", payload, "mode: 9 not in allowed values [1, 2, 3]")
    env.client.config_set("maxmemory", 1)  # with the default noeviction policy every write fails
    try:
        with pytest.raises(Unavailable, match="online_pending"):
            env.service.replay([record_id], {record_id: json.dumps(payload | {"mode": 1})})
    finally:
        env.client.config_set("maxmemory", 0)
    assert [r.id for r in env.service.list_quarantined(status="online_pending")] == [record_id]
    return record_id


def training_value(env: Env, event: datetime) -> list[float]:
    """Sensor 7's temperature in a training set labelled just after ``event``."""
    labels = pa.table({"sensor_id": [7], "event_ts": pa.array([event + timedelta(seconds=1)], TIMESTAMP)})
    training = get_historical_features(
        env.offline, env.registry, labels, ["climate:temperature_c"], record=False
    )
    values: list[float] = training.table.column("climate:temperature_c").to_pylist()
    return values


def test_a_replayed_record_completed_online_later_does_not_take_a_tie_from_a_later_run(env: Env) -> None:
    """The reviewer's case: a replayed record (30.0) is stored offline, but its online write fails; a
    batch run stores the same sensor and event time later (25.0); then a replay completes the record's
    online value. The completion wrote it from the payload stamped *now*, which beat the run's ingestion
    time, while the training set returned the run's row (latest ingestion): online 30.0, offline 25.0 for
    good. The record now keeps its stored row's ingestion time, and both return 25.0."""
    event = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    record_id = replayed_online_pending(env, event)
    later = pa.table(
        {
            "sensor_id": pa.array([7], pa.int64()),
            "event_ts": pa.array([event], TIMESTAMP),
            "temperature_c": pa.array([25.0], pa.float32()),
            "mode": pa.array([2], pa.int32()),
        }
    )
    env.service.ingest("climate", 1, [later])

    assert env.service.replay([record_id], {}).replayed == [record_id]

    view = env.registry.get_feature_view("climate")
    assert training_value(env, event) == [25.0]
    assert online(env.client, view) == (int(event.timestamp() * 1_000_000), 25.0)


def test_an_online_pending_record_kept_without_its_ingestion_time_still_completes(env: Env) -> None:
    """A record committed online_pending before migration 0032 kept no ingestion time
    (``ingested_at_us`` NULL): its online value is still written, from its payload, stamped when it is
    written (the fallback); one that kept it carries its stored row's ``ingested_ts``."""
    event = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    record_id = replayed_online_pending(env, event)
    with write_session(env.sessions) as session:
        row = session.get(QuarantineRow, record_id)
        assert row is not None and row.ingested_at_us is not None  # the replay's stored ingested_ts
        row.ingested_at_us = None  # as a record committed before the column was
    before = time.time_ns() // 1000

    assert env.service.replay([record_id], {}).replayed == [record_id]

    view = env.registry.get_feature_view("climate")
    assert online(env.client, view) == (int(event.timestamp() * 1_000_000), 30.0)
    assert before <= written_at(env.client, view) <= time.time_ns() // 1000
    assert training_value(env, event) == [30.0]


def test_a_completed_record_carries_its_stored_rows_ingestion_time(env: Env) -> None:
    """The online value of a completed online_pending record carries, as its write time, the
    ``ingested_ts`` the offline store holds for its row (not the time of the replay that completes it)."""
    event = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    record_id = replayed_online_pending(env, event)
    with read_session(env.sessions) as session:
        row = session.get(QuarantineRow, record_id)
        assert row is not None
        kept = row.ingested_at_us
    stored = pa.Table.from_batches(list(env.offline.scan("climate", 1, columns=["ingested_ts"])))
    assert stored.column("ingested_ts").cast(pa.int64()).to_pylist() == [kept]

    assert env.service.replay([record_id], {}).replayed == [record_id]

    view = env.registry.get_feature_view("climate")
    assert written_at(env.client, view) == kept


def test_keys_expire_as_the_online_writers_do(env: Env) -> None:
    spec = pb.FeatureViewSpec()
    spec.CopyFrom(env.registry.get_feature_view("climate").spec)
    spec.name, spec.ttl_seconds = "climate_ttl", 600
    ttl_view = env.registry.create_feature_view(spec, pb.FeatureViewMetadata())
    write_latest(env.client, ttl_view, ["sensor_id"], rows(5, 1.0))
    expires_ms = env.client.pttl(online_key("sensor", ["7"], "climate_ttl", 1))
    assert 600 * 1000 * EXPIRY_TTL_FACTOR - 10_000 < expires_ms <= 600 * 1000 * EXPIRY_TTL_FACTOR

    view = env.registry.get_feature_view("climate")  # no TTL: the key never expires, as a plain SET
    env.client.set(KEY, b"old", px=60_000)
    write_latest(env.client, view, ["sensor_id"], rows(5, 1.0))
    assert env.client.pttl(KEY) == -1

    # A TTL above the registry's maximum, stored before it was enforced: its PX was beyond what Redis
    # takes and every online write of the view failed; it is no expiry, as the join takes it as no TTL.
    ttl_view.spec.ttl_seconds = 2**62
    write_latest(env.client, ttl_view, ["sensor_id"], rows(6, 1.0))
    assert env.client.pttl(online_key("sensor", ["7"], "climate_ttl", 1)) == -1


def test_a_concurrent_older_ingest_cannot_put_its_value_back(env: Env, redis_url: str) -> None:
    """Ingest A (an old row) pauses after its first round trip to Redis; ingest B writes a fresher row
    meanwhile. Were A's freshness check a read before its write, A would overwrite B's row."""
    view = env.registry.get_feature_view("climate")
    january = (datetime(2025, 1, 1, tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
    june = (datetime(2025, 6, 1, tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
    slow = PausingRedis.from_url(redis_url)
    failures: list[BaseException] = []

    def ingest_a() -> None:
        try:
            write_latest(slow, view, ["sensor_id"], rows(january, 1.0))
        except BaseException as exc:
            failures.append(exc)
            slow.paused.set()

    writer = threading.Thread(target=ingest_a)
    writer.start()
    assert slow.paused.wait(10)
    write_latest(env.client, view, ["sensor_id"], rows(june, 2.0))
    slow.resume.set()
    writer.join(10)
    slow.close()
    assert not failures
    assert online(env.client, view) == (june, 2.0)
