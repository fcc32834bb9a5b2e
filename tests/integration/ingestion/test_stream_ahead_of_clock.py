"""A message whose stream time is far ahead of the materializer's clock is quarantined as such, and on
Kafka leaves its partition's stream time where it was.

Found in review: a Kafka partition's stream time is its greatest record time, so one record stamped ten
years ahead (a producer's clock, or a timestamp set by hand) moved it there, and every later record of
the partition, stamped correctly, was quarantined as late until the wall clock caught up. A Redis
stream's explicit id ahead did the same through the ids Redis gives every later entry. Now a stream time
more than ``--max-future-skew-s`` (5 minutes) ahead of the clock is refused with a reason saying so.
Kafka: librdkafka's mock cluster (a FAKE broker: none can be installed here, tests/support/kafka_mock.py);
real redis-server, SQLite, Parquet offline store."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db import read_session
from control_plane.ingestion import quarantine
from control_plane.ingestion.streaming.kafka_source import KafkaSource
from control_plane.ingestion.streaming.materializer import StreamMaterializer
from control_plane.ingestion.streaming.options import MaterializerOptions
from control_plane.ingestion.streaming.redis_source import RedisStreamSource
from control_plane.offline.store import OfflineStore
from tests.integration.ingestion.streaming_support import (
    FAST_GROUP,
    Event,
    event_fields,
    registry_db,
    run_until_idle,
)
from tests.integration.ingestion.test_kafka_source import KilledBeforeOffsetCommit, read_all
from tests.support.kafka_mock import KafkaMockCluster

pytestmark = pytest.mark.integration

TOPIC = "clicks-ahead"
TEN_YEARS_MS = 10 * 365 * 86_400_000
AHEAD_REASON = "ahead of the materializer's clock"


def _reasons(sessions: sessionmaker[Session], run_id: str) -> dict[str, str]:
    with read_session(sessions) as session:
        records = quarantine.list_quarantined(session, view="clicks", run_id=run_id)
    return {record.record_key: record.reason for record in records}


def test_a_kafka_record_stamped_years_ahead_is_refused_and_the_next_ones_are_on_time_after_a_replay(
    kafka: KafkaMockCluster, tmp_path: Path, redis_url: str
) -> None:
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    now = datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    events = [Event(0, now - timedelta(seconds=40 - i), 1.0 + i) for i in range(4)]
    stamps = [now_ms - 40_000, now_ms + TEN_YEARS_MS, now_ms - 38_000, now_ms - 37_000]
    ids = kafka.publish(TOPIC, [event_fields(e) for e in events], keys=["0"] * 4, timestamps_ms=stamps)
    options = MaterializerOptions(count=100, block_ms=100, lag_every_s=600, reclaim_every_s=600)
    offline = OfflineStore(str(tmp_path / "offline"))
    # The process dies after the batch's Redis commit, before Kafka's offset commit: delivered again.
    crashing = KilledBeforeOffsetCommit(kafka.bootstrap, TOPIC, options.group, "c1", FAST_GROUP)
    first = StreamMaterializer(view, entity, crashing, client, sessions, offline, options)
    first.start()
    first.process(read_all(crashing, 4))
    first.flush()
    crashing.close()
    # Before, the two records after it were late by ten years as well: (1, 3).
    assert (first.totals.accepted, first.totals.quarantined) == (3, 1)
    reasons = _reasons(sessions, first.run.run_id)
    assert list(reasons) == [ids[1]]
    assert AHEAD_REASON in reasons[ids[1]], reasons[ids[1]]
    assert "it allows 300 s (--max-future-skew-s)" in reasons[ids[1]]

    # The replay: the four come back (the same decisions: each one skipped as already decided, the
    # ahead one judged ahead again as it is read), and a record published since is on time.
    later = Event(0, now - timedelta(seconds=5), 9.0)
    later_id = kafka.publish(TOPIC, [event_fields(later)], keys=["0"], timestamps_ms=[now_ms - 5_000])[0]
    source = KafkaSource(kafka.bootstrap, TOPIC, options.group, "c2", FAST_GROUP)
    restarted = StreamMaterializer(view, entity, source, client, sessions, offline, options)
    restarted.start()
    received, deadline = 0, time.monotonic() + 60
    while received < 5 and time.monotonic() < deadline:
        received += restarted.step().received
    restarted.flush()
    source.close()
    totals = restarted.totals
    assert (totals.duplicates, totals.accepted, totals.quarantined) == (4, 1, 0)
    with read_session(sessions) as session:
        counts = quarantine.run_counts(session, first.run.run_id)
    assert (counts.records_in, counts.accepted, counts.quarantined) == (5, 4, 1)  # each record once
    assert later_id not in _reasons(sessions, first.run.run_id)


def test_a_redis_id_ahead_of_the_clock_is_refused_as_ahead_until_the_clock_reaches_it(
    tmp_path: Path, redis_url: str
) -> None:
    """A Redis stream's ids are its positions: Redis gives every ``*`` entry after an explicit id ahead an
    id after it, so those are ahead too. They are refused with a reason that says so (before: late by
    however far the id was set ahead, which pointed at the producer's event times), and once the clock
    reaches the id they are judged as before."""
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    stream, group = f"events:clicks:{uuid.uuid4().hex}", uuid.uuid4().hex
    now = datetime.now(UTC)
    ahead_ms = int(now.timestamp() * 1000) + 2 * 3_600_000  # two hours ahead, past the 1 h lateness
    fields = event_fields(Event(0, now - timedelta(seconds=30), 1.0))
    explicit = client.xadd(stream, fields, id=f"{ahead_ms}-0").decode()  # type: ignore[arg-type, union-attr]
    after = client.xadd(stream, fields).decode()  # type: ignore[arg-type, union-attr]
    assert after.startswith(f"{ahead_ms}-")
    options = MaterializerOptions(group=group, block_ms=10)
    offline = OfflineStore(str(tmp_path / "offline"))
    source = RedisStreamSource(client, stream, group, "c0")
    m = StreamMaterializer(view, entity, source, client, sessions, offline, options)
    m.start()
    run_until_idle(m)
    m.flush()
    source.close()
    assert (m.totals.accepted, m.totals.quarantined) == (0, 2)
    reasons = _reasons(sessions, m.run.run_id)
    for message_id in (explicit, after):
        assert reasons[message_id].startswith("stream id "), reasons[message_id]
        assert AHEAD_REASON in reasons[message_id], reasons[message_id]
        assert "Redis gives every later `*` entry an id after it" in reasons[message_id]

    # The clock two hours on (a source whose clock says so): an entry stamped then is judged as before.
    later = Event(0, now + timedelta(hours=2), 2.0)
    client.xadd(stream, event_fields(later))  # type: ignore[arg-type]
    caught_up = RedisStreamSource(client, stream, group, "c1", clock_ms=lambda: ahead_ms + 1000)
    m2 = StreamMaterializer(view, entity, caught_up, client, sessions, offline, options)
    m2.start()
    run_until_idle(m2)
    caught_up.close()
    assert (m2.totals.accepted, m2.totals.quarantined) == (1, 0)
