"""A Kafka record's JSON fields: a ``null`` is a missing value, never the text "null", and a name given
twice quarantines the record (librdkafka's mock cluster, a real redis-server and SQLite quarantine)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import redis

from control_plane.db import read_session
from control_plane.ingestion import quarantine
from kernels.online_keys import online_key
from tests.integration.ingestion.streaming_support import materialize_kafka, registry_db, spend_view
from tests.support.kafka_mock import KafkaMockCluster

TOPIC = "spend-events"


def test_a_null_join_key_or_value_in_a_kafka_record_is_quarantined_as_missing(
    kafka: KafkaMockCluster, tmp_path: Path, redis_url: str
) -> None:
    """Each field's JSON value was turned to text with json.dumps, so ``null`` became the string "null":
    a record with ``"user_id": null`` was accepted as the user named "null" (its amount aggregated into
    that entity's windows and written online), and ``"amount": null`` was refused as "'null' not castable"
    instead of as a missing value."""
    _url, sessions, _clicks, _sensor = registry_db(tmp_path)
    view, entity = spend_view(sessions, f"kafka://{kafka.bootstrap}/{TOPIC}")
    client = redis.Redis.from_url(redis_url)
    now = datetime.now(UTC).isoformat()
    kafka.publish(
        TOPIC,
        [
            {"user_id": None, "event_ts": now, "amount": "5"},
            {"user_id": "carol", "event_ts": now, "amount": None},
            {"user_id": "bob", "event_ts": now, "amount": "7"},
            {"user_id": None, "event_ts": None, "amount": None},  # nothing but nulls: kept whole
        ],
        keys=["k"] * 4,
    )
    materialize_kafka(kafka.bootstrap, TOPIC, view, entity, client, sessions, tmp_path / "off", expected=4)

    assert sorted(client.keys("ae:*")) == [online_key("user", ["bob"], "spend", 1)]
    with read_session(sessions) as session:
        held = quarantine.list_quarantined(session, view="spend")
        (run,) = quarantine.list_runs(session, "spend")
    reasons = sorted(record.reason for record in held)
    assert reasons[:2] == [
        "amount: null (NaN or missing) not allowed",
        "user_id: required join key is null (NaN or missing)",
    ]
    assert "_raw: unknown column" in reasons[2]
    assert (run.records_in, run.accepted, run.quarantined) == (4, 1, 3)


def test_a_kafka_record_naming_a_field_twice_is_quarantined_with_both_values(
    kafka: KafkaMockCluster, tmp_path: Path, redis_url: str
) -> None:
    """JSON allows a name twice in an object, and json.loads kept its last value: ``{"user_id": "alice",
    ..., "user_id": "bob"}`` was aggregated into bob, silently."""
    _url, sessions, _clicks, _sensor = registry_db(tmp_path)
    view, entity = spend_view(sessions, f"kafka://{kafka.bootstrap}/{TOPIC}")
    client = redis.Redis.from_url(redis_url)
    now = datetime.now(UTC).isoformat()
    twice = f'{{"user_id": "alice", "event_ts": "{now}", "amount": 5, "user_id": "bob"}}'.encode()
    kafka.publish(TOPIC, [twice, {"user_id": "dave", "event_ts": now, "amount": "7"}], keys=["k"] * 2)
    materialize_kafka(kafka.bootstrap, TOPIC, view, entity, client, sessions, tmp_path / "off", expected=2)

    assert sorted(client.keys("ae:*")) == [online_key("user", ["dave"], "spend", 1)]
    with read_session(sessions) as session:
        (held,) = quarantine.list_quarantined(session, view="spend")
        (run,) = quarantine.list_runs(session, "spend")
    assert held.reason == "user_id: field named 2 times in the record ('alice', 'bob')"
    assert (run.records_in, run.accepted, run.quarantined) == (2, 1, 1)
