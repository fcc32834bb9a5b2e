"""``KafkaSource`` against librdkafka's mock cluster (a fake broker that speaks the Kafka protocol; no
real broker can be installed here, see tests/support/kafka_mock.py): delivery, acknowledgement by
committed offsets, redelivery after a restart, malformed records, history, lag, and the materializer
end to end with online values equal to brute force over the raw events."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
import redis

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.errors import FailedPrecondition, Unavailable
from clients.sdk.ingestion import IngestionClient
from control_plane.api.ingestion import add_to_server
from control_plane.db import read_session, write_session
from control_plane.ingestion import quarantine
from control_plane.ingestion.quarantine import RunSource, record_outcome
from control_plane.ingestion.service import IngestionService
from control_plane.ingestion.streaming.kafka_publish import parse_kafka_url, produce
from control_plane.ingestion.streaming.kafka_records import RAW_FIELD
from control_plane.ingestion.streaming.kafka_source import KafkaSource
from control_plane.ingestion.streaming.materializer import StreamMaterializer
from control_plane.ingestion.streaming.options import MaterializerOptions
from control_plane.ingestion.streaming.source import MessageBatch
from control_plane.ingestion.streaming.state_keys import StateKeys
from control_plane.offline.store import OfflineStore
from control_plane.server import start_server
from control_plane.settings import ControlPlaneSettings
from kernels.online_keys import online_key
from tests.integration.ingestion.conftest import CLICKS, ENTITY, Env
from tests.integration.ingestion.streaming_support import (
    FAST_GROUP,
    Event,
    assert_close,
    event_fields,
    expected_online,
    materialize_kafka,
    materializer_env,
    random_events,
    read_online,
    registry_db,
    sigkill_once_applied,
    spend_view,
    start_materializer,
    wait_until_handled,
)
from tests.support.kafka_mock import KafkaMockCluster

TOPIC = "clicks-events"


def publish_events(kafka: KafkaMockCluster, events: list[Event]) -> None:
    """Publishes the events keyed by sensor (one sensor, one partition) and records each one's id."""
    fields = [event_fields(e) for e in events]
    ids = kafka.publish(TOPIC, fields, keys=[f["sensor_id"] for f in fields])
    for event, message_id in zip(events, ids, strict=True):
        event.id = message_id


def read_all(source: KafkaSource, expected: int, timeout_s: float = 30.0) -> MessageBatch:
    """Reads until ``expected`` messages came (the first read waits for the group's assignment)."""
    got: list[MessageBatch] = []
    deadline = time.monotonic() + timeout_s
    while sum(map(len, got)) < expected and time.monotonic() < deadline:
        batch = source.read(500, 200)
        if batch:
            got.append(batch)
    return MessageBatch.of([m for b in got for m in b.messages()])


def quiet_for(source: KafkaSource, seconds: float) -> MessageBatch:
    """Everything read in ``seconds`` (long enough for a rebalance to hand out the partitions)."""
    got: list[MessageBatch] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        batch = source.read(500, 200)
        if batch:
            got.append(batch)
    return MessageBatch.of([m for b in got for m in b.messages()])


def test_kafka_urls_name_brokers_and_topic() -> None:
    assert parse_kafka_url("kafka://b1:9092,b2:9092/events") == ("b1:9092,b2:9092", "events")
    for bad in ("kafka://b1:9092", "redis://b1/events", "kafka:///events", "kafka://b/a/b"):
        with pytest.raises(ValueError, match="kafka://host:port/topic"):
            parse_kafka_url(bad)


def test_acknowledged_records_are_not_delivered_again(kafka: KafkaMockCluster) -> None:
    values = [{"sensor_id": str(i % 5), "amount": str(i)} for i in range(60)]
    ids = kafka.publish(TOPIC, values, keys=[v["sensor_id"] for v in values])
    first = KafkaSource(kafka.bootstrap, TOPIC, "g", "c1", FAST_GROUP)
    batch = read_all(first, len(values))
    assert sorted(batch.ids) == sorted(ids) and len(set(batch.ids)) == len(ids)
    by_id = dict(zip(ids, values, strict=True))
    assert all(batch.fields(i) == by_id[message_id] for i, message_id in enumerate(batch.ids))
    assert first.lag().messages == len(values)  # delivered, not acknowledged
    first.ack(batch.ids)
    assert first.lag().messages == 0
    first.close()

    second = KafkaSource(kafka.bootstrap, TOPIC, "g", "c2", FAST_GROUP)
    later = kafka.publish(TOPIC, [{"sensor_id": "9", "amount": "1"}], keys=["9"])
    assert read_all(second, 1).ids == later  # only the record published after the acknowledgement
    assert len(quiet_for(second, 2.0)) == 0
    second.close()


def test_unacknowledged_records_come_back_and_a_gap_holds_the_commit(kafka: KafkaMockCluster) -> None:
    values = [{"n": str(i)} for i in range(40)]
    ids = kafka.publish(TOPIC, values, keys=[str(i % 4) for i in range(40)])
    first = KafkaSource(kafka.bootstrap, TOPIC, "g", "c1", FAST_GROUP)
    batch = read_all(first, len(values))
    # Hold back the first record of one partition: that partition's commit stays before it.
    partition = batch.ids[0].split("-")[0]
    in_partition = sorted(
        (i for i in ids if i.startswith(f"{partition}-")), key=lambda i: int(i.split("-")[1])
    )
    held = in_partition[0]
    first.ack([i for i in batch.ids if i != held])
    assert first.lag().messages == len(in_partition)  # everything from the held record on
    first.close()  # a crash after processing: nothing more is acknowledged

    second = KafkaSource(kafka.bootstrap, TOPIC, "g", "c2", FAST_GROUP)
    again = read_all(second, len(in_partition))
    # At least once: the held record and the acknowledged ones behind it come back, no other.
    assert sorted(again.ids) == sorted(in_partition)
    second.ack(again.ids)
    assert second.lag().messages == 0
    second.close()


def test_records_acknowledged_behind_a_gap_are_held_and_carry_their_record_times(
    kafka: KafkaMockCluster,
) -> None:
    """What a trim of the applied ids must spare: the records acknowledged behind an unacknowledged one
    (their partition's committed offset stays before them, so they come back after a restart), and the
    record times by which the ids are scored."""
    base_ms = 1_760_000_000_000
    values = [{"n": str(i)} for i in range(12)]
    ids = kafka.publish(TOPIC, values, keys=["k"] * 12, timestamps_ms=[base_ms + i for i in range(12)])
    source = KafkaSource(kafka.bootstrap, TOPIC, "g", "c1", FAST_GROUP)
    batch = read_all(source, len(values))
    assert source.stream_times_ms(batch.ids) == [base_ms + ids.index(i) for i in batch.ids]
    assert source.held_ids() == []  # delivered, none acknowledged yet
    source.ack([i for i in ids if i != ids[4]])
    assert sorted(source.held_ids()) == sorted(ids[5:])  # behind the gap at ids[4]; ids[:4] committed
    source.ack([ids[4]])
    assert source.held_ids() == []
    source.close()


def test_malformed_records_arrive_as_a_raw_field(kafka: KafkaMockCluster) -> None:
    ids = kafka.publish(TOPIC, [b"not json", b"[1, 2]", b"", {"amount": "1"}], keys=["k"] * 4)
    source = KafkaSource(kafka.bootstrap, TOPIC, "g", "c1", FAST_GROUP)
    batch = read_all(source, 4)
    fields = {message_id: batch.fields(i) for i, message_id in enumerate(batch.ids)}
    assert fields[ids[0]] == {RAW_FIELD: "not json"}
    assert fields[ids[1]] == {RAW_FIELD: "[1, 2]"}
    assert fields[ids[2]] == {RAW_FIELD: ""}
    assert fields[ids[3]] == {"amount": "1"}
    source.close()


def test_history_rereads_records_from_a_time_without_touching_the_group(kafka: KafkaMockCluster) -> None:
    t0 = int(time.time() * 1000) - 100_000
    values = [{"n": str(i)} for i in range(100)]
    ids = kafka.publish(
        TOPIC, values, keys=[str(i % 3) for i in range(100)], timestamps_ms=[t0 + i for i in range(100)]
    )
    source = KafkaSource(kafka.bootstrap, TOPIC, "g", "c1", FAST_GROUP)
    pages = list(source.history(t0 + 60, page=7))
    seen = [m for page in pages for m in page.messages()]
    assert sorted(m.id for m in seen) == sorted(ids[60:])
    assert all(len(page) <= 7 + 500 for page in pages)
    assert source.lag().messages == len(values)  # history moved no offset of the group
    source.close()


def test_asking_for_the_lag_does_not_hold_up_reading(kafka: KafkaMockCluster) -> None:
    """The materializer asks for its lag every second. Asked on the group consumer's own connections,
    each request waited behind the fetches in flight: 1.5-2.5 s per ask here, so a backlog of 1,000
    records read 100 at a time, asking after each read, took over 15 s. On a consumer of its own it
    takes milliseconds, and the figures are the same."""
    kafka.publish(TOPIC, [{"n": str(i)} for i in range(1000)])
    source = KafkaSource(kafka.bootstrap, TOPIC, "g", "c1", FAST_GROUP)
    while source.lag().messages != 1000:  # the topic's end offset is known to the broker
        time.sleep(0.05)
    read, lags = 0, []
    started = time.monotonic()
    while read < 1000 and time.monotonic() - started < 60:
        batch = source.read(100, 50)
        if batch.ids:
            source.ack(batch.ids)
            read += len(batch.ids)
            lags.append((source.lag().messages, 1000 - read))
    elapsed = time.monotonic() - started
    assert read == 1000
    # Each ask saw the commit before it (a read returns up to 100 records, fewer on a loaded machine).
    assert all(lag == left for lag, left in lags), lags
    assert elapsed < 10, f"reading 1,000 records while asking for the lag took {elapsed:.1f} s"
    source.close()


def test_materializer_over_kafka_matches_brute_force(
    kafka: KafkaMockCluster, tmp_path: Path, redis_url: str
) -> None:
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    events = random_events(600, seed=5)
    publish_events(kafka, events)
    kafka.publish(
        TOPIC, [b"\x00\xff garbage", {"sensor_id": "1", "event_ts": "2026-01-01T00:00:00", "amount": "1"}]
    )
    options = MaterializerOptions(
        count=300, block_ms=50, reclaim_idle_ms=200, reclaim_every_s=0.1, lag_every_s=0.1
    )
    source = KafkaSource(kafka.bootstrap, TOPIC, options.group, "c1", FAST_GROUP)
    materializer = StreamMaterializer(
        view, entity, source, client, sessions, OfflineStore(str(tmp_path / "off")), options
    )
    materializer.start()
    deadline = time.monotonic() + 60
    received = 0
    while received < len(events) + 2 and time.monotonic() < deadline:
        received += materializer.step().received
    materializer.flush()
    assert received == len(events) + 2

    expected = expected_online(events)
    found = read_online(client, view, sorted(expected))
    assert_close(found, expected)
    with read_session(sessions) as session:
        counts = quarantine.run_counts(session, materializer.run.run_id)
    assert (counts.records_in, counts.accepted, counts.quarantined) == (len(events) + 2, len(events), 2)
    assert source.lag().messages == 0
    source.close()


def test_applied_kafka_ids_older_than_any_rebuild_are_trimmed_and_nothing_counts_twice(
    kafka: KafkaMockCluster, tmp_path: Path, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The applied / rejected id sets of a Kafka-sourced view were never trimmed (their ids were scored
    by partition, not time): Redis memory grew with every record ever processed. They are scored by
    record time now and trimmed as on a Redis stream; a restart still rebuilds exactly, and a
    redelivery of the ids kept is still skipped. Members scored by partition (written before) stay."""
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    keys = StateKeys.of("clicks", 1, "materializer")
    client.zadd(keys.applied, {"7-123": 7})  # as an earlier version scored a Kafka id: by its partition
    now_ms = int(time.time() * 1000)
    old_ms = now_ms - 3 * 86_400_000  # before the 24 h window and the 1 h lateness of the newest
    old = [Event(1, datetime.fromtimestamp((old_ms + i) / 1000, UTC), 1.0) for i in range(5)]
    recent = [
        Event(i % 3, datetime.fromtimestamp((now_ms - 1000 + 10 * i) / 1000, UTC), 2.0) for i in range(6)
    ]
    options = MaterializerOptions(
        count=300, block_ms=50, reclaim_idle_ms=200, reclaim_every_s=0.1, lag_every_s=60, trim_every_s=60
    )

    def materialize(events: list[Event]) -> StreamMaterializer:
        stamps = [int(e.ts.timestamp() * 1000) for e in events]
        fields: list[dict[str, str] | bytes] = [event_fields(e) for e in events]
        published = kafka.publish(
            TOPIC, [*fields, b"garbage"], keys=[str(e.sensor) for e in events] + ["1"],
            timestamps_ms=[*stamps, stamps[-1] + 1],
        )  # fmt: skip
        for event, message_id in zip(events, published, strict=False):
            event.id = message_id
        source = KafkaSource(kafka.bootstrap, TOPIC, options.group, "c1", FAST_GROUP)
        offline = OfflineStore(str(tmp_path / "offline"))
        materializer = StreamMaterializer(view, entity, source, client, sessions, offline, options)
        materializer.start()
        received, deadline = 0, time.monotonic() + 60
        while received < len(events) + 1 and time.monotonic() < deadline:
            received += materializer.step().received
        materializer.flush()
        assert received == len(events) + 1
        source.close()
        return materializer

    materialize(old)
    assert client.zcard(keys.applied) == 5 + 1 and client.zcard(keys.rejected) == 1
    assert client.zscore(keys.applied, old[0].id) == old_ms  # scored by record time
    materialize(recent[:3])
    # This run rebuilds its windows from the ids kept (recent[:3]); its commits trim the old ones.
    materializer = materialize(recent[3:])
    applied = {i.decode() for i in client.zrange(keys.applied, 0, -1)}
    assert applied == {e.id for e in recent} | {"7-123"}
    assert client.zcard(keys.rejected) == 2  # the two recent rejects; the old one is gone
    assert_close(read_online(client, view, [0, 1, 2]), expected_online(recent))

    # A redelivery of the ids kept is still skipped, changing nothing.
    source = KafkaSource(kafka.bootstrap, TOPIC, options.group, "c2", FAST_GROUP)
    again = MessageBatch.of([m for b in source.history(now_ms - 2000, 1000) for m in b.messages()])
    stats = materializer.process(again)
    assert (stats.duplicates, stats.accepted) == (len(recent) + 2, 0)
    assert_close(read_online(client, view, [0, 1, 2]), expected_online(recent))
    assert old_ms < int(client.get(keys.trimmed_below) or 0) <= now_ms
    source.close()


class KilledBeforeOffsetCommit(KafkaSource):
    """A FAKE for a fault hard to time otherwise: the process dies after the Redis commit of a batch and
    before Kafka's offset commit, so Kafka delivers the batch again after the restart."""

    def ack(self, ids: list[str]) -> None:
        pass


def test_a_record_stamped_before_the_trim_point_and_delivered_again_after_a_crash_counts_once(
    kafka: KafkaMockCluster, tmp_path: Path, redis_url: str
) -> None:
    """Producers stamp Kafka records (CreateTime), so a record can be stamped days before the records
    around it. Scored by its own record time, its id fell below the trim point, and a restart after a
    crash between the Redis and Kafka commits trimmed it (a commit of another partition) before it came
    back: it was applied twice. Ids are scored by their partition's stream time (the greatest record
    time up to them), which never puts a record Kafka may deliver again below the resume point."""
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    probe = kafka.publish("probe", [{"n": "1"}] * 8, keys=[str(i) for i in range(8)])
    partition_of = {str(i): message_id.split("-")[0] for i, message_id in enumerate(probe)}
    a = "0"
    b = next(key for key, partition in partition_of.items() if partition != partition_of[a])
    now = datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    old_ms = now_ms - 3 * 86_400_000
    events = [Event(int(key), now - timedelta(seconds=age), 1.0) for key in (a, a, b, b) for age in (30,)]
    kafka.publish(
        TOPIC, [event_fields(e) for e in events], keys=[a, a, b, b],
        timestamps_ms=[now_ms - 30_000, old_ms, now_ms - 30_000, old_ms],
    )  # fmt: skip
    options = MaterializerOptions(count=100, block_ms=100, lag_every_s=600, reclaim_every_s=600)
    offline = OfflineStore(str(tmp_path / "offline"))
    crashing = KilledBeforeOffsetCommit(kafka.bootstrap, TOPIC, options.group, "c1", FAST_GROUP)
    first = StreamMaterializer(view, entity, crashing, client, sessions, offline, options)
    first.start()
    first.process(read_all(crashing, 4))
    first.flush()
    crashing.close()
    assert first.totals.accepted == 4

    kafka.publish(
        TOPIC, [event_fields(Event(int(key), now - timedelta(seconds=10), 1.0)) for key in (a, b)],
        keys=[a, b], timestamps_ms=[now_ms - 10_000] * 2,
    )  # fmt: skip
    one_at_a_time = dataclasses.replace(options, count=1)
    source = KafkaSource(kafka.bootstrap, TOPIC, options.group, "c2", FAST_GROUP)
    restarted = StreamMaterializer(view, entity, source, client, sessions, offline, one_at_a_time)
    restarted.start()
    received, deadline = 0, time.monotonic() + 60
    while received < 6 and time.monotonic() < deadline:
        received += restarted.step().received
    restarted.flush()
    source.close()
    assert (restarted.totals.duplicates, restarted.totals.accepted) == (4, 2)
    assert sum(batch.num_rows for batch in offline.scan("clicks", 1)) == 6  # one history row per event


def test_a_kafka_field_that_is_not_utf8_is_quarantined_with_its_reason(
    kafka: KafkaMockCluster, tmp_path: Path, redis_url: str
) -> None:
    """A record with bytes that are not UTF-8 became one ``_raw`` field decoded with U+FFFD (no reason
    naming the field), and a JSON escape of a lone surrogate (``"\\ud800"``) made a string Arrow refuses,
    which raised out of the materializer. Both are quarantined now, their reason naming the field."""
    _url, sessions, _clicks, _sensor = registry_db(tmp_path)
    view, entity = spend_view(sessions, f"kafka://{kafka.bootstrap}/{TOPIC}")
    client = redis.Redis.from_url(redis_url)
    now = datetime.now(UTC).isoformat()
    kafka.publish(
        TOPIC,
        [
            b'{"user_id": "alice\xff", "event_ts": "' + now.encode() + b'", "amount": "1"}',
            b'{"user_id": "alice\\ud800", "event_ts": "' + now.encode() + b'", "amount": "100"}',
            {"user_id": "bob", "event_ts": now, "amount": "7"},
        ],
        keys=["k"] * 3,
    )
    materialize_kafka(kafka.bootstrap, TOPIC, view, entity, client, sessions, tmp_path / "off", expected=3)
    assert sorted(client.keys("ae:*")) == [online_key("user", ["bob"], "spend", 1)]
    with read_session(sessions) as session:
        reasons = sorted(r.reason for r in quarantine.list_quarantined(session, view="spend"))
    assert reasons == [
        "user_id: b'alice\\xed\\xa0\\x80' is not valid UTF-8",  # the JSON escape \ud800
        "user_id: b'alice\\xff' is not valid UTF-8",
    ]


def test_sigkilled_materializer_on_kafka_restarts_without_double_counting(
    kafka: KafkaMockCluster, tmp_path: Path, redis_url: str
) -> None:
    url, sessions, view, _entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    events = random_events(3000, seed=13, sensors=40)
    env = materializer_env(tmp_path, url, redis_url)
    stream = ["--stream", f"kafka://{kafka.bootstrap}/{TOPIC}", "--count", "100", "--block-ms", "20"]
    fast = [f"--kafka-option={key}={value}" for key, value in FAST_GROUP.items()]

    def start() -> subprocess.Popen[str]:
        return start_materializer([*stream, *fast], env)

    keys = StateKeys.of("clicks", 1, "materializer")

    first = start()
    publish_events(kafka, events)
    kafka.publish(TOPIC, [{"sensor_id": "1", "event_ts": "yesterday", "amount": "1"}])
    killed_at = sigkill_once_applied(first, client, keys.applied, at_least=800, timeout_s=60)
    assert 0 < killed_at < len(events)

    second = start()  # gets the partitions once the killed consumer's session expires
    try:
        wait_until_handled(client, keys, len(events) + 1, timeout_s=60)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=20)
    expected = expected_online(events)
    found = read_online(client, view, sorted(expected))
    assert_close(found, expected)
    with read_session(sessions) as session:
        runs = quarantine.list_runs(session, "clicks")
    assert [(r.records_in, r.accepted, r.quarantined) for r in runs] == [(len(events) + 1, len(events), 1)]
    # Every offset was committed in the end: a third consumer of the group would get nothing.
    probe = KafkaSource(kafka.bootstrap, TOPIC, "materializer", "probe", FAST_GROUP)
    assert probe.lag().messages == 0
    probe.close()


# -- replaying quarantined records of a Kafka-sourced view ---------------------------------------------


def kafka_clicks(env: Env, uri: str) -> None:
    spec = pb.FeatureViewSpec()
    spec.CopyFrom(CLICKS)
    spec.name, spec.source.uri = "kclicks", uri
    env.registry.create_feature_view(spec, pb.FeatureViewMetadata())


def test_a_replayed_record_of_a_kafka_view_goes_back_to_its_topic(kafka: KafkaMockCluster, env: Env) -> None:
    kafka_clicks(env, f"kafka://{kafka.bootstrap}/{TOPIC}")
    event = {"sensor_id": "5", "event_ts": datetime.now(UTC).isoformat(), "amount": "oops"}
    record_id = env.quarantine("kclicks", event, "amount: bad", key="0-17")
    outcome = env.service.replay([record_id], {record_id: json.dumps({**event, "amount": "3.5"})})
    assert outcome.replayed == [record_id]
    assert env.service.get_quarantined(record_id).status == quarantine.REPLAYED
    source = KafkaSource(kafka.bootstrap, TOPIC, "g", "c1", FAST_GROUP)
    batch = read_all(source, 1)
    assert [batch.fields(i) for i in range(len(batch))] == [{**event, "amount": "3.5"}]
    source.close()
    assert env.client.keys("*") == []  # no Redis stream named after the topic


def test_a_kafka_replay_without_a_kafka_client_is_refused_and_the_record_stays(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A FAKE missing extra: None in sys.modules makes the import raise ImportError, as it does on a
    # control plane installed without confluent-kafka (which this test environment always has).
    monkeypatch.setitem(sys.modules, "control_plane.ingestion.streaming.kafka_publish", None)
    kafka_clicks(env, "kafka://127.0.0.1:9/clicks")
    event = {"sensor_id": "5", "event_ts": datetime.now(UTC).isoformat(), "amount": "3.5"}
    record_id = env.quarantine("kclicks", event, "amount: bad")
    with pytest.raises(FailedPrecondition, match=r"reads from Kafka .* no Kafka client .*stay quarantined"):
        env.service.replay([record_id], {})
    assert env.service.get_quarantined(record_id).status == quarantine.QUARANTINED
    assert env.client.keys("*") == []


def test_records_a_broker_does_not_acknowledge_are_reported_as_not_delivered() -> None:
    reports = produce("127.0.0.1:9", TOPIC, [{"n": "1"}, {"n": "2"}], timeout_s=1.0)  # nothing listens
    assert len(reports) == 2 and all(report is not None for report in reports)


def test_a_kafka_replay_the_broker_does_not_acknowledge_fails_and_the_record_stays(env: Env) -> None:
    kafka_clicks(env, "kafka://127.0.0.1:9/clicks")  # nothing listens there
    event = {"sensor_id": "5", "event_ts": datetime.now(UTC).isoformat(), "amount": "3.5"}
    record_id = env.quarantine("kclicks", event, "amount: bad")
    with pytest.raises(Unavailable, match=r"1 records of view 'kclicks' were not acknowledged"):
        env.service.replay([record_id], {})
    assert env.service.get_quarantined(record_id).status == quarantine.QUARANTINED
    replays = [run for run in env.service.list_runs() if run.source_kind == "replay"]
    assert [(run.records_in, run.accepted, run.quarantined, run.published) for run in replays] == [
        (0, 0, 0, 0)
    ]


def client_configuration(log: str, client_id: str) -> dict[str, str]:
    """The settings librdkafka printed (``debug=conf``) for the clients named ``client_id`` as they
    started: ``%7|<time>|CONF|<client.id>#producer-<n>| [thrd:app]:   key = value`` lines."""
    settings: dict[str, str] = {}
    for line in log.splitlines():
        prefix, _, text = line.partition("]: ")
        if f"|CONF|{client_id}#" in prefix and " = " in text:
            key, _, value = text.strip().partition(" = ")
            settings[key] = value
    return settings


async def test_a_replay_over_grpc_publishes_with_the_kafka_options_of_the_settings(
    kafka: KafkaMockCluster, tmp_path: Path, redis_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """A secured cluster refuses a client without its security settings, so the replay's producer must
    get the materializer's: here from the properties file both read (AETHER_KAFKA_OPTIONS_FILE) into
    the control plane's settings. The fake broker cannot require SASL, so the test reads what the
    producer was configured with from librdkafka's own dump of it (``debug=conf``, one more option)."""
    options = tmp_path / "kafka.properties"
    options.write_text(
        "# what the materializers of this cluster get too\n"
        "client.id = aether-replayer\n"
        "security.protocol = plaintext\n"  # the fake broker's; SASL_SSL on a real secured cluster
        "sasl.mechanism = SCRAM-SHA-512\n"
        "sasl.username = replayer\n"
        "sasl.password = s3cr=t\n"
        "socket.keepalive.enable = true\n"
        "debug = conf\n"
    )
    settings = ControlPlaneSettings.from_env(
        {
            "AETHER_HOME": str(tmp_path),
            "AETHER_DB_URL": f"sqlite:///{tmp_path / 'aether.db'}",
            "AETHER_REDIS_URL": redis_url,
            "AETHER_CONTROL_PLANE_ADDR": "127.0.0.1:0",
            "AETHER_KAFKA_OPTIONS_FILE": str(options),
        }
    )
    server = await start_server(settings, services=[add_to_server])
    try:
        server.registry.create_entity(ENTITY)
        spec = pb.FeatureViewSpec()
        spec.CopyFrom(CLICKS)
        spec.name, spec.source.uri = "kclicks", f"kafka://{kafka.bootstrap}/{TOPIC}"
        server.registry.create_feature_view(spec, pb.FeatureViewMetadata())
        event = {"sensor_id": "5", "event_ts": datetime.now(UTC).isoformat(), "amount": "oops"}
        run = RunSource("stream:kclicks", "kclicks", 1, "stream", TOPIC)
        rejected = pa.table({"payload": [json.dumps(event)], "reason": ["amount: bad"]})
        with write_session(server.context.sessions) as session:
            record_outcome(session, run, accepted=0, rejected=rejected, record_keys=["0-3"])
            (record,) = quarantine.list_quarantined(session, run_id=run.run_id)
        client = IngestionClient(server.address)
        fixed = json.dumps({**event, "amount": "3.5"})
        response = await asyncio.to_thread(client.replay, [record.id], {record.id: fixed})
        client.close()
    finally:
        await server.stop()
    assert list(response.replayed) == [record.id]
    configured = client_configuration(capfd.readouterr().err, "aether-replayer")
    assert {key: configured.get(key) for key in ("security.protocol", "sasl.mechanisms")} == {
        "security.protocol": "plaintext",
        "sasl.mechanisms": "SCRAM-SHA-512",
    }
    assert configured.get("socket.keepalive.enable") == "true"
    # Secrets are set, and librdkafka never prints them.
    assert configured.get("sasl.username") == configured.get("sasl.password") == "[redacted]"
    source = KafkaSource(kafka.bootstrap, TOPIC, "g", "c1", FAST_GROUP)
    batch = read_all(source, 1)
    assert [batch.fields(i) for i in range(len(batch))] == [{**event, "amount": "3.5"}]
    source.close()


# A replay in a process of its own, as a control plane runs it: argv is the database URL, the Redis URL,
# the offline root, the record id and its corrected payload.
REPLAY_PROCESS = """
import sys, redis
from control_plane.db import create_db_engine, create_session_factory
from control_plane.features.registry import FeatureRegistry
from control_plane.ingestion.service import IngestionService
from control_plane.offline.store import OfflineStore
db_url, redis_url, offline, record_id, payload = sys.argv[1:]
sessions = create_session_factory(create_db_engine(db_url))
client = redis.Redis.from_url(redis_url)
service = IngestionService(sessions, FeatureRegistry(sessions), OfflineStore(offline), client)
service.replay([int(record_id)], {int(record_id): payload})
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_replay_killed_mid_write_leaves_a_claim_the_next_replay_takes_over_after_the_lease(
    kafka: KafkaMockCluster, backend: str, request: pytest.FixtureRequest, tmp_path: Path, redis_url: str
) -> None:
    """A control plane replaying into a cluster it cannot reach hangs in the publish and is SIGKILLed; its
    record stays claimed (``replaying``), refused to other replays while the lease runs, then taken over
    by the restarted control plane (here with the bootstrap option that reaches the cluster) and
    published once."""
    env: Env = request.getfixturevalue("env" if backend == "sqlite" else "postgresql_env")
    kafka_clicks(env, "kafka://127.0.0.1:9/clicks-events")  # nothing listens there
    event = {"sensor_id": "5", "event_ts": datetime.now(UTC).isoformat(), "amount": "oops"}
    record_id = env.quarantine("kclicks", event, "amount: bad")
    fixed = json.dumps({**event, "amount": "3.5"})
    db_url = env.sessions.kw["bind"].url.render_as_string(hide_password=False)
    args = [db_url, redis_url, str(tmp_path / "offline"), str(record_id), fixed]
    child_env = materializer_env(tmp_path, db_url, redis_url)
    child = subprocess.Popen([sys.executable, "-c", REPLAY_PROCESS, *args], env=child_env)
    try:
        deadline = time.monotonic() + 30
        while env.service.get_quarantined(record_id).status != quarantine.REPLAYING:
            assert child.poll() is None and time.monotonic() < deadline, "the replay never claimed"
            time.sleep(0.05)
        time.sleep(0.5)  # inside its publish, which waits for a broker that is not there
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert env.service.get_quarantined(record_id).status == quarantine.REPLAYING
    with pytest.raises(FailedPrecondition, match=rf"records \[{record_id}\] are being replayed by another"):
        env.service.replay([record_id], {record_id: fixed})

    lease_s = 0.5
    restarted = IngestionService(
        env.sessions, env.registry, env.offline, env.client,
        kafka_options={"bootstrap.servers": kafka.bootstrap}, claim_lease_s=lease_s,
    )  # fmt: skip
    time.sleep(lease_s)
    assert restarted.replay([record_id], {record_id: fixed}).replayed == [record_id]
    assert env.service.get_quarantined(record_id).status == quarantine.REPLAYED
    source = KafkaSource(kafka.bootstrap, "clicks-events", "g", "c1", FAST_GROUP)
    batch = read_all(source, 1)
    assert [batch.fields(i) for i in range(len(batch))] == [{**event, "amount": "3.5"}]
    assert len(quiet_for(source, 1.0)) == 0  # published once
    source.close()
