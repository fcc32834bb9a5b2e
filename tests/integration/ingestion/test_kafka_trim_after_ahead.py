"""After a Kafka record stamped far ahead of the clock, the applied / rejected id sets are trimmed as
before, and a replay after crashes still counts every record once.

Found in review: a record's id is scored by its partition's greatest record time up to it, so one record
stamped ten years ahead scored itself and every later record of its partition ten years ahead, for the
rest of the consumer's run: their members stayed in Redis until the clock got there. Each record now
counts at most at the clock plus the skew when it was read (``stream_time.py``). Trimming them must still
never drop a record Kafka may deliver again: the resume point (and so every trim point) is bounded by the
score stored for the record at the committed offset (``KafkaSource._resume_bounds``), which a record
ahead of the clock no longer pulls up to its own time.

A run "three days ago" is a source whose clock says so (``clock_ms``): the stamps of its records are
then three days old for the run after it, which reads with the real clock, so its trim reaches them.
Kafka: librdkafka's mock cluster (a FAKE broker: none can be installed here, tests/support/kafka_mock.py);
real redis-server, SQLite, Parquet offline store."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import feature_registry_pb2 as pb
from control_plane.db import read_session
from control_plane.ingestion import quarantine
from control_plane.ingestion.streaming.kafka_source import KafkaSource
from control_plane.ingestion.streaming.materializer import StreamMaterializer
from control_plane.ingestion.streaming.options import MaterializerOptions
from control_plane.ingestion.streaming.state_keys import StateKeys
from control_plane.offline.store import OfflineStore
from tests.integration.ingestion.streaming_support import FAST_GROUP, Event, event_fields, registry_db
from tests.integration.ingestion.test_kafka_source import KilledBeforeOffsetCommit
from tests.support.kafka_mock import KafkaMockCluster

pytestmark = pytest.mark.integration

TOPIC = "clicks-trim-after-ahead"
TEN_YEARS_MS = 10 * 365 * 86_400_000
THREE_DAYS_MS = 3 * 86_400_000  # past the clicks view's longest window (24 h) plus the lateness (1 h)
# A trim point computed at every step, so that the commit after a new record trims with a fresh one.
OPTIONS = MaterializerOptions(count=100, block_ms=100, lag_every_s=600, reclaim_every_s=600, trim_every_s=0)


def _members(client: redis.Redis, key: str) -> set[str]:
    return {member.decode() for member in client.zrange(key, 0, -1)}


def _run(
    source: KafkaSource,
    client: redis.Redis,
    view_db: tuple[sessionmaker[Session], pb.FeatureView, pb.Entity],
    offline: OfflineStore,
    expected: int,
) -> StreamMaterializer:
    """A materializer on ``source`` stepped until it received ``expected`` records; its source closed."""
    sessions, view, entity = view_db
    materializer = StreamMaterializer(view, entity, source, client, sessions, offline, OPTIONS)
    materializer.start()
    received, deadline = 0, time.monotonic() + 60
    while received < expected and time.monotonic() < deadline:
        received += materializer.step().received
    materializer.flush()
    source.close()
    assert received == expected
    return materializer


def _publish_old_with_one_ahead(kafka: KafkaMockCluster, now_ms: int) -> list[str]:
    """One partition: a record stamped ten years ahead of a clock three days back, then two stamped
    then (their events a second before their stamps)."""
    then_ms = now_ms - THREE_DAYS_MS
    stamps = [then_ms + TEN_YEARS_MS, then_ms, then_ms + 1]
    events = [Event(0, datetime.fromtimestamp((then_ms - 1000) / 1000, UTC), 1.0 + i) for i in range(3)]
    return kafka.publish(TOPIC, [event_fields(e) for e in events], keys=["0"] * 3, timestamps_ms=stamps)


def _publish_now(kafka: KafkaMockCluster, now_ms: int, amount: float) -> str:
    event = Event(0, datetime.fromtimestamp((now_ms - 11_000) / 1000, UTC), amount)
    return kafka.publish(TOPIC, [event_fields(event)], keys=["0"], timestamps_ms=[now_ms - 10_000])[0]


def test_ids_after_a_record_stamped_years_ahead_are_trimmed_once_older_than_any_rebuild(
    kafka: KafkaMockCluster, tmp_path: Path, redis_url: str
) -> None:
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    keys = StateKeys.of("clicks", 1, OPTIONS.group)
    offline = OfflineStore(str(tmp_path / "offline"))
    now_ms = int(time.time() * 1000)
    ahead, *on_time = _publish_old_with_one_ahead(kafka, now_ms)
    three_days_ago = KafkaSource(
        kafka.bootstrap, TOPIC, OPTIONS.group, "c1", FAST_GROUP, clock_ms=lambda: now_ms - THREE_DAYS_MS
    )
    first = _run(three_days_ago, client, (sessions, view, entity), offline, 3)
    assert (first.totals.accepted, first.totals.quarantined) == (2, 1)
    # Each counted at most at the clock then plus the 300 s skew, not ten years ahead.
    assert client.zscore(keys.rejected, ahead) == now_ms - THREE_DAYS_MS + 300_000

    recent = _publish_now(kafka, now_ms, 5.0)
    _run(KafkaSource(kafka.bootstrap, TOPIC, OPTIONS.group, "c2", FAST_GROUP), client,
         (sessions, view, entity), offline, 1)  # fmt: skip
    # Before: the two after it (and it) were scored ten years ahead and stayed: applied held them too.
    assert _members(client, keys.applied) == {recent}
    assert _members(client, keys.rejected) == set()
    assert not set(on_time) & _members(client, keys.applied)


def test_a_replay_after_two_crashes_behind_a_record_stamped_years_ahead_applies_each_record_once(
    kafka: KafkaMockCluster, tmp_path: Path, redis_url: str
) -> None:
    """The case the resume bound is for. A run three days ago processes the record ahead and the two
    after it and dies before Kafka's commit: the committed offset stays at the record ahead. The next
    run (today) reads them again, skips them, commits a new record with a trim, and dies the same way.
    With the scores bounded by the clock but the resume point still the record time at the committed
    offset (ten years ahead, so the clock), its trim dropped the three, scored three days ago, and the
    third run would apply and count them again (seen so: the second run's sets lost them). The bound is
    the score stored for that record, three days ago: the trim spares them. (Before the scores were
    bounded, they were ten years ahead and never trimmed: the leak of the test above.)"""
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    keys = StateKeys.of("clicks", 1, OPTIONS.group)
    offline = OfflineStore(str(tmp_path / "offline"))
    view_db = (sessions, view, entity)
    now_ms = int(time.time() * 1000)
    ids = _publish_old_with_one_ahead(kafka, now_ms)
    crashed = KilledBeforeOffsetCommit(
        kafka.bootstrap, TOPIC, OPTIONS.group, "c1", FAST_GROUP, clock_ms=lambda: now_ms - THREE_DAYS_MS
    )
    first = _run(crashed, client, view_db, offline, 3)
    assert (first.totals.accepted, first.totals.quarantined) == (2, 1)

    ids.append(_publish_now(kafka, now_ms, 5.0))
    crashed_again = KilledBeforeOffsetCommit(kafka.bootstrap, TOPIC, OPTIONS.group, "c2", FAST_GROUP)
    second = _run(crashed_again, client, view_db, offline, 4)
    assert (second.totals.duplicates, second.totals.accepted) == (3, 1)
    assert _members(client, keys.applied) | _members(client, keys.rejected) == set(ids)

    third = _run(KafkaSource(kafka.bootstrap, TOPIC, OPTIONS.group, "c3", FAST_GROUP), client,
                 view_db, offline, 4)  # fmt: skip
    assert (third.totals.duplicates, third.totals.accepted, third.totals.quarantined) == (4, 0, 0)
    with read_session(sessions) as session:
        counts = quarantine.run_counts(session, first.run.run_id)
    assert (counts.records_in, counts.accepted, counts.quarantined) == (4, 3, 1)  # each record once
    assert sum(batch.num_rows for batch in offline.scan("clicks", 1)) == 3  # one history row per event
