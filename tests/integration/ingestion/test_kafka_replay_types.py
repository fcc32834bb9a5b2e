"""A quarantined Kafka record keeps its JSON values with their types, and a replay publishes them as they
came and judges them as the Kafka reader does (librdkafka's mock Kafka cluster, a real redis-server, a
SQLite quarantine and offline store).

The quarantine kept a Kafka record's fields as the reader's text and a replay published them as JSON
strings: a record quarantined for ``user_id: JSON number 1.0 is a float`` was accepted, replayed
unchanged, as the entity ``"1.0"``. A replay without a correction now gives the first read's verdict,
with its reason, and a correction is read by the same rules.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from control_plane.db import read_session
from control_plane.ingestion import quarantine
from control_plane.ingestion.quarantine import QuarantinedRecord
from control_plane.ingestion.streaming.materializer import StreamMaterializer
from control_plane.ingestion.streaming.options import MaterializerOptions
from control_plane.ingestion.streaming.redis_source import RedisStreamSource
from control_plane.offline.store import OfflineStore
from kernels.online_keys import online_key
from tests.integration.ingestion.conftest import Env
from tests.integration.ingestion.streaming_support import materialize_kafka, run_until_idle, spend_view
from tests.support.kafka_mock import KafkaMockCluster

TOPIC = "spend-events"
WHY = "a string join key takes text or an integer"
OPTIONS = MaterializerOptions(count=500, block_ms=50, reclaim_every_s=0.1, lag_every_s=0.1)


def _topic_values(bootstrap: str, topic: str) -> list[object]:
    """Every record's value on ``topic``, parsed as JSON, partition by partition."""
    reader = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "test-reader", "enable.auto.commit": False}
    )
    try:
        metadata = reader.list_topics(topic, timeout=10).topics[topic]
        values: list[object] = []
        for partition in sorted(metadata.partitions):
            low, high = reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if high <= low:
                continue
            reader.assign([TopicPartition(topic, partition, low)])
            got: list[object] = []
            while len(got) < high - low:
                for record in reader.consume(num_messages=high - low, timeout=5):
                    assert record.error() is None, record.error()
                    got.append(json.loads(record.value()))
            values += got
        return values
    finally:
        reader.close()


def _quarantined_from_kafka(
    kafka: KafkaMockCluster, env: Env, tmp_path: Path, record: bytes
) -> QuarantinedRecord:
    """Publishes ``record`` to the spend view's topic, runs a materializer over it, and returns its
    quarantined copy (the test's record is one the reader refuses)."""
    kafka.publish(TOPIC, [record], keys=["k"])
    view, entity = spend_view(env.sessions, f"kafka://{kafka.bootstrap}/{TOPIC}")
    materialize_kafka(kafka.bootstrap, TOPIC, view, entity, env.client, env.sessions, tmp_path / "off", 1)
    (held,) = env.service.list_quarantined(view="spend")
    return held


def _stream_run(env: Env) -> quarantine.RunCounts:
    with read_session(env.sessions) as session:
        (run,) = [run for run in quarantine.list_runs(session, "spend") if run.source_kind == "stream"]
    return run


def _now() -> str:
    return datetime.now(UTC).isoformat()


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ('"user_id": 1.0, "amount": 2', f"user_id: JSON number 1.0 is a float; {WHY}"),
        ('"user_id": true, "amount": 2', f"user_id: JSON true is a bool; {WHY}"),
        ('"user_id": "carol", "amount": true', "amount: 'true' not castable to double"),
        ('"user_id": "dave", "amount": [2]', "amount: '[2]' not castable to double"),
    ],
)
def test_a_kafka_record_replayed_unchanged_gets_its_first_verdict_and_reason(
    kafka: KafkaMockCluster, env: Env, tmp_path: Path, values: str, reason: str
) -> None:
    """Replayed unchanged, a record the reader refused for a JSON type (a float or bool key, a bool or a
    list for a number) stays quarantined with the reason the reader gave, and nothing is published: it
    was published as text (``{"user_id": "1.0"}``) and accepted as the entity ``"1.0"``."""
    held = _quarantined_from_kafka(kafka, env, tmp_path, f'{{{values}, "event_ts": "{_now()}"}}'.encode())
    assert held.reason.startswith(reason)
    before = json.loads(held.payload)

    outcome = env.service.replay([held.id], {})

    assert outcome.replayed == []
    again = env.service.get_quarantined(held.id)
    assert (again.status, again.reason, json.loads(again.payload)) == (
        quarantine.QUARANTINED,
        held.reason,
        before,
    )
    assert len(_topic_values(kafka.bootstrap, TOPIC)) == 1  # the original record only
    assert env.client.keys("ae:*") == []
    stream = _stream_run(env)
    assert (stream.records_in, stream.accepted, stream.quarantined) == (1, 0, 1)
    (replay,) = [run for run in env.service.list_runs() if run.source_kind == "replay"]
    assert (replay.records_in, replay.accepted, replay.quarantined, replay.published) == (1, 0, 1, 0)


def test_the_quarantine_keeps_a_kafka_records_json_types(
    kafka: KafkaMockCluster, env: Env, tmp_path: Path
) -> None:
    """Numbers, bools and nested values stay what the record held (a null is a missing field, as read)."""
    record = (
        f'{{"user_id": 1.0, "amount": 2, "tags": {{"a": [1, false]}}, "note": null, "event_ts": "{_now()}"}}'
    )
    held = _quarantined_from_kafka(kafka, env, tmp_path, record.encode())
    payload = json.loads(held.payload)
    assert {k: v for k, v in payload.items() if k != "event_ts"} == {
        "user_id": 1.0,
        "amount": 2,
        "tags": {"a": [1, False]},
    }
    assert isinstance(payload["user_id"], float) and isinstance(payload["amount"], int)


def test_a_corrected_kafka_record_is_published_with_its_json_types_and_accepted(
    kafka: KafkaMockCluster, env: Env, tmp_path: Path
) -> None:
    """A correction is published as the JSON it is (``amount`` the number 2.5, not the text "2.5") and the
    stream run that reads it back accepts it; every run adds up."""
    now = _now()
    held = _quarantined_from_kafka(
        kafka, env, tmp_path, f'{{"user_id": 1.0, "amount": 2, "event_ts": "{now}"}}'.encode()
    )
    fixed = {"user_id": "u1", "amount": 2.5, "event_ts": now}

    outcome = env.service.replay([held.id], {held.id: json.dumps(fixed)})

    assert outcome.replayed == [held.id]
    # A replay publishes without a key, so its partition (and its place in a partition-by-partition read)
    # is the producer's choice: the two records are looked for, not their order.
    values = _topic_values(kafka.bootstrap, TOPIC)
    assert len(values) == 2 and fixed in values
    assert {"user_id": 1.0, "amount": 2, "event_ts": now} in values  # the original, as it was
    view, entity = env.registry.get_feature_view("spend", 1), env.registry.get_entity("user")
    materialize_kafka(kafka.bootstrap, TOPIC, view, entity, env.client, env.sessions, tmp_path / "off", 1)
    assert env.client.keys("ae:*") == [online_key("user", ["u1"], "spend", 1)]
    stream = _stream_run(env)
    assert (stream.records_in, stream.accepted, stream.quarantined) == (2, 1, 1)
    (replay,) = [run for run in env.service.list_runs() if run.source_kind == "replay"]
    assert (replay.records_in, replay.accepted, replay.quarantined, replay.published) == (0, 0, 0, 1)


def test_a_correction_is_read_by_the_kafka_readers_rules(
    kafka: KafkaMockCluster, env: Env, tmp_path: Path
) -> None:
    """A correction that gives a float for the string key is refused with the reader's reason, and nothing
    is published; the reader would have refused it."""
    now = _now()
    held = _quarantined_from_kafka(
        kafka, env, tmp_path, f'{{"user_id": 1.0, "amount": 2, "event_ts": "{now}"}}'.encode()
    )
    corrected = json.dumps({"user_id": 2.0, "amount": 2, "event_ts": now})

    outcome = env.service.replay([held.id], {held.id: corrected})

    assert outcome.replayed == []
    again = env.service.get_quarantined(held.id)
    assert (again.status, again.reason) == (
        quarantine.QUARANTINED,
        f"user_id: JSON number 2.0 is a float; {WHY}",
    )
    assert json.loads(again.payload)["user_id"] == 2.0
    assert len(_topic_values(kafka.bootstrap, TOPIC)) == 1


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"user_id": "carol", "amount": "true"}, "amount: 'true' not castable to double"),
        ({"user_id": "dave", "amount": "[2]"}, "amount: '[2]' not castable to double"),
        ({"amount": "2"}, "user_id"),
    ],
)
def test_a_redis_stream_record_replayed_unchanged_gets_its_first_verdict_and_reason(
    env: Env, tmp_path: Path, fields: dict[str, str], reason: str
) -> None:
    """A Redis stream's fields are text and its quarantined copies hold that text: replayed unchanged, a
    record is judged as its first read judged it (no type was lost to lose)."""
    view, entity = spend_view(env.sessions, "events:spend")
    env.client.xadd("events:spend", {**fields, "event_ts": _now()})
    source = RedisStreamSource(env.client, "events:spend", OPTIONS.group, "c1")
    materializer = StreamMaterializer(
        view, entity, source, env.client, env.sessions, OfflineStore(str(tmp_path / "offline")), OPTIONS
    )
    materializer.start()
    run_until_idle(materializer)
    (held,) = env.service.list_quarantined(view="spend")
    assert reason in held.reason

    outcome = env.service.replay([held.id], {})

    assert outcome.replayed == []
    again = env.service.get_quarantined(held.id)
    assert (again.status, again.reason, again.payload) == (quarantine.QUARANTINED, held.reason, held.payload)
    assert env.client.xlen("events:spend") == 1
