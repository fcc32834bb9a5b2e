"""A stream message quarantined for a field named twice, or for bytes that are not UTF-8, keeps that in
its quarantined copy, so a replay without a correction gives the first read's verdict and reason and
publishes nothing (a real redis-server stream, librdkafka's mock Kafka cluster, a SQLite quarantine).

The copy kept a repeated field's first value only, and the bad bytes as ``\\xNN`` text (valid text): an
unchanged replay judged a record without the repeat, or with the literal text ``alice\\xff`` as its key,
and accepted it. A correction is judged as any other.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from control_plane.db import read_session
from control_plane.ingestion import quarantine
from control_plane.ingestion.quarantine import QuarantinedRecord
from control_plane.ingestion.streaming.materializer import StreamMaterializer
from control_plane.ingestion.streaming.options import MaterializerOptions
from control_plane.ingestion.streaming.redis_source import RedisStreamSource
from control_plane.offline.store import OfflineStore
from tests.integration.ingestion.conftest import Env
from tests.integration.ingestion.streaming_support import materialize_kafka, run_until_idle, spend_view
from tests.support.kafka_mock import KafkaMockCluster

STREAM = "events:spend"
TOPIC = "spend-events"
OPTIONS = MaterializerOptions(count=500, block_ms=50, reclaim_every_s=0.1, lag_every_s=0.1)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _quarantined_from_redis(env: Env, tmp_path: Path, fields: list[bytes]) -> QuarantinedRecord:
    """XADDs one entry of ``fields`` (name, value, ...; a name may repeat) to the spend view's stream,
    materializes it, and returns its quarantined copy."""
    view, entity = spend_view(env.sessions, STREAM)
    env.client.execute_command("XADD", STREAM, "*", *fields)
    source = RedisStreamSource(env.client, STREAM, OPTIONS.group, "c1")
    materializer = StreamMaterializer(
        view, entity, source, env.client, env.sessions, OfflineStore(str(tmp_path / "offline")), OPTIONS
    )
    materializer.start()
    run_until_idle(materializer)
    (held,) = env.service.list_quarantined(view="spend")
    return held


def _quarantined_from_kafka(
    kafka: KafkaMockCluster, env: Env, tmp_path: Path, record: bytes
) -> QuarantinedRecord:
    kafka.publish(TOPIC, [record], keys=["k"])
    view, entity = spend_view(env.sessions, f"kafka://{kafka.bootstrap}/{TOPIC}")
    materialize_kafka(kafka.bootstrap, TOPIC, view, entity, env.client, env.sessions, tmp_path / "off", 1)
    (held,) = env.service.list_quarantined(view="spend")
    return held


def _assert_kept_as_first_read(env: Env, held: QuarantinedRecord) -> None:
    """Replays ``held`` unchanged: it stays quarantined with its reason and payload, and the replay run
    counts it in and quarantined (in = accepted + quarantined), nothing published."""
    outcome = env.service.replay([held.id], {})

    assert outcome.replayed == []
    again = env.service.get_quarantined(held.id)
    assert (again.status, again.reason, again.payload) == (quarantine.QUARANTINED, held.reason, held.payload)
    assert env.client.keys("ae:*") == []
    (replay,) = [run for run in env.service.list_runs() if run.source_kind == "replay"]
    assert (replay.records_in, replay.accepted, replay.quarantined, replay.published) == (1, 0, 1, 0)


def _redis_entries(env: Env) -> int:
    return int(env.client.xlen(STREAM))


def test_a_redis_entry_naming_a_field_twice_stays_quarantined_replayed_unchanged(
    env: Env, tmp_path: Path
) -> None:
    now = _now().encode()
    held = _quarantined_from_redis(
        env, tmp_path, [b"user_id", b"alice", b"event_ts", now, b"amount", b"5", b"user_id", b"bob"]
    )
    assert held.reason == "user_id: field named 2 times in the entry ('alice', 'bob')"

    _assert_kept_as_first_read(env, held)
    assert _redis_entries(env) == 1


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ([b"user_id", b"alice\xff", b"amount", b"5"], "user_id: b'alice\\xff' is not valid UTF-8"),
        (
            [b"user_id", b"carol", b"amount", b"5", b"note\xff", b"x"],
            "field name b'note\\xff' is not valid UTF-8; note\\xff: unknown column",
        ),
    ],
)
def test_a_redis_entry_with_bytes_not_utf8_stays_quarantined_replayed_unchanged(
    env: Env, tmp_path: Path, fields: list[bytes], reason: str
) -> None:
    held = _quarantined_from_redis(env, tmp_path, [*fields, b"event_ts", _now().encode()])
    assert held.reason == reason

    _assert_kept_as_first_read(env, held)
    assert _redis_entries(env) == 1


def test_a_corrected_redis_entry_is_judged_as_given_and_published(env: Env, tmp_path: Path) -> None:
    """A correction that names each field once, in valid text, is published: only the first read's
    fault kept the record, not the record."""
    now = _now()
    held = _quarantined_from_redis(
        env, tmp_path, [b"user_id", b"alice\xff", b"event_ts", now.encode(), b"amount", b"5"]
    )
    fixed = json.dumps({"user_id": "alice", "event_ts": now, "amount": "5"})

    outcome = env.service.replay([held.id], {held.id: fixed})

    assert outcome.replayed == [held.id]
    assert _redis_entries(env) == 2


def test_a_correction_naming_a_field_twice_is_refused_with_the_readers_reason(
    env: Env, tmp_path: Path
) -> None:
    now = _now()
    held = _quarantined_from_redis(
        env, tmp_path, [b"user_id", b"alice\xff", b"event_ts", now.encode(), b"amount", b"5"]
    )
    corrected = f'{{"user_id": "alice", "event_ts": "{now}", "amount": "5", "amount": "6"}}'

    outcome = env.service.replay([held.id], {held.id: corrected})

    assert outcome.replayed == []
    again = env.service.get_quarantined(held.id)
    assert (again.status, again.reason) == (
        quarantine.QUARANTINED,
        "amount: field named 2 times in the entry ('5', '6')",
    )
    assert _redis_entries(env) == 1


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        (b'"user_id": "alice", "amount": 5, "user_id": "bob"', "user_id: field named 2 times in the record"),
        (b'"user_id": "alice\xff", "amount": 5', "user_id: b'alice\\xff' is not valid UTF-8"),
        (b'"user_id": "alice\\ud800", "amount": 5', "user_id: b'alice\\xed\\xa0\\x80' is not valid UTF-8"),
    ],
)
def test_a_kafka_record_with_a_repeat_or_bytes_not_utf8_stays_quarantined_replayed_unchanged(
    kafka: KafkaMockCluster, env: Env, tmp_path: Path, values: bytes, reason: str
) -> None:
    held = _quarantined_from_kafka(
        kafka, env, tmp_path, b"{" + values + b', "event_ts": "' + _now().encode() + b'"}'
    )
    assert held.reason.startswith(reason)

    _assert_kept_as_first_read(env, held)
    with read_session(env.sessions) as session:
        (stream,) = [run for run in quarantine.list_runs(session, "spend") if run.source_kind == "stream"]
    assert (stream.records_in, stream.accepted, stream.quarantined) == (1, 0, 1)
