"""A Redis stream whose last id is far ahead of the clock is reported loudly: a gauge and an alert that say
by how much, until when, and what the operator must do.

Found in review: a producer's explicit id set ahead makes Redis give every later ``*`` entry an id after
it, so every entry added is quarantined as ahead until the clock reaches that id (maybe years). The
materializer said so only in each quarantined record's reason: the view's sole sign was that everything
it received went to the quarantine. The materializer's lag check now reads the stream's last generated
id (``RedisStreamSource._ids_ahead``); ``aether_stream_ids_ahead_seconds`` gives how far it is ahead,
and an ALERT line, logged when it starts and every 10 minutes while it lasts, names the stream, the
amount, when entries will be taken again and the fix. Redis does take those ``*`` entries (the same
milliseconds, the next sequence); at the greatest id it takes none, and the alert says that instead.
Real redis-server, SQLite, Parquet offline store; the source's clock is a fixed one (``clock_ms``), so
that the amounts are exact."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from control_plane.ingestion.streaming.materializer import StreamMaterializer
from control_plane.ingestion.streaming.options import MaterializerOptions
from control_plane.ingestion.streaming.redis_source import RedisStreamSource
from control_plane.offline.store import OfflineStore
from tests.integration.ingestion.streaming_support import Event, event_fields, registry_db

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000


def _ids_ahead_s(materializer: StreamMaterializer) -> float | None:
    registry = materializer.metrics.registry
    return registry.get_sample_value("aether_stream_ids_ahead_seconds", {"view": "clicks"})


def _alerts(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "ahead of the materializer's clock" in r.getMessage()]


def test_a_stream_whose_last_id_is_ahead_of_the_clock_raises_an_alert_and_a_gauge_until_the_clock_gets_there(
    tmp_path: Path, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    stream, group = f"events:clicks:{uuid.uuid4().hex}", uuid.uuid4().hex
    now = datetime.now(UTC).replace(microsecond=0)
    clock = [int(now.timestamp() * 1000)]
    ahead_ms = clock[0] + 2 * HOUR_MS
    fields = event_fields(Event(0, now - timedelta(seconds=30), 1.0))
    client.xadd(stream, fields, id=f"{ahead_ms}-0")  # type: ignore[arg-type]
    # Taken by Redis, after the id ahead: the same milliseconds, the next sequence.
    assert client.xadd(stream, fields) == f"{ahead_ms}-1".encode()  # type: ignore[arg-type]
    options = MaterializerOptions(group=group, block_ms=10, lag_every_s=0)  # the lag checked every step
    offline = OfflineStore(str(tmp_path / "offline"))
    source = RedisStreamSource(client, stream, group, "c0", clock_ms=lambda: clock[0])
    m = StreamMaterializer(view, entity, source, client, sessions, offline, options)
    m.start()
    caplog.set_level(logging.WARNING, logger="aether.ingestion.stream")
    for _ in range(5):
        m.step()
    assert (m.totals.accepted, m.totals.quarantined) == (0, 2)
    assert _ids_ahead_s(m) == 2 * 3600
    alerts = _alerts(caplog)
    assert len(alerts) == 1, alerts  # once when it starts, not at every lag check
    until = datetime.fromtimestamp((ahead_ms - 300_000) / 1000, UTC).isoformat().replace("+00:00", "Z")
    assert alerts[0].startswith(
        f"ALERT stream {stream} of view clicks: its last id {ahead_ms}-1 is 2 h ahead"
    )
    for told in (
        "300 s allowed (--max-future-skew-s)",
        f"quarantined as ahead until {until}",
        "a new stream",
    ):
        assert told in alerts[0], alerts[0]

    # The clock past the id: entries are taken again, the gauge is back to 0 and one line says so.
    clock[0] = ahead_ms + 1000
    client.xadd(stream, event_fields(Event(0, now + timedelta(hours=2), 2.0)))  # type: ignore[arg-type]
    for _ in range(3):
        m.step()
    m.flush()
    source.close()
    assert (m.totals.accepted, m.totals.quarantined) == (1, 2)
    assert _ids_ahead_s(m) == 0
    assert "stream ids of view clicks no longer ahead of the clock" in caplog.text


def test_a_stream_whose_ids_are_exhausted_is_reported_as_refusing_every_entry_not_as_quarantining_them(
    tmp_path: Path, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A producer's explicit id (or XSETID) at Redis's greatest id, 18446744073709551615-18446744073709551615:
    Redis then refuses every XADD to the stream, ``*`` included, for good (checked here against the real
    server). Found in review: the alert said that every entry added was quarantined as ahead until a time
    it printed as a number of microseconds, as if entries were still added and the clock would mend it;
    producers' writes fail instead, and nothing reaches the materializer to be counted. The alert now says
    so, and a gauge (``aether_stream_ids_exhausted``) is 1 while it lasts."""
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    stream, group = f"events:clicks:{uuid.uuid4().hex}", uuid.uuid4().hex
    now = datetime.now(UTC).replace(microsecond=0)
    fields = event_fields(Event(0, now - timedelta(seconds=30), 1.0))
    greatest = f"{2**64 - 1}-{2**64 - 1}"
    client.xadd(stream, fields, id=greatest)  # type: ignore[arg-type]
    with pytest.raises(redis.ResponseError, match="exhausted the last possible ID"):
        client.xadd(stream, fields)  # type: ignore[arg-type]
    options = MaterializerOptions(group=group, block_ms=10, lag_every_s=0)
    offline = OfflineStore(str(tmp_path / "offline"))
    source = RedisStreamSource(client, stream, group, "c0")
    m = StreamMaterializer(view, entity, source, client, sessions, offline, options)
    m.start()
    caplog.set_level(logging.WARNING, logger="aether.ingestion.stream")
    for _ in range(3):
        m.step()
    m.flush()
    source.close()
    assert (m.totals.accepted, m.totals.quarantined) == (0, 1)  # the entry at that id (unorderable)
    registry = m.metrics.registry
    assert registry.get_sample_value("aether_stream_ids_exhausted", {"view": "clicks"}) == 1
    alerts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ALERT stream ")]
    assert len(alerts) == 1, alerts
    assert alerts[0].startswith(
        f"ALERT stream {stream} of view clicks: its last id {greatest} is the greatest"
    )
    for told in (
        "Redis refuses every XADD to it",
        "exhausted the last possible ID",
        "a new stream",
    ):
        assert told in alerts[0], alerts[0]
    assert "quarantined as ahead until" not in alerts[0]


def test_reading_the_history_back_stops_at_the_greatest_id(redis_url: str) -> None:
    """The rebuild pages through the stream with exclusive ranges after each page's last id; after the
    greatest id Redis answers such a range with an error ("invalid start ID for the interval"), which
    ended the rebuild when a full page ended there. Nothing can follow that id: the pages stop at it."""
    client = redis.Redis.from_url(redis_url)
    stream = f"events:clicks:{uuid.uuid4().hex}"
    fields = event_fields(Event(0, datetime.now(UTC), 1.0))
    client.xadd(stream, fields, id="1-1")  # type: ignore[arg-type]
    client.xadd(stream, fields, id=f"{2**64 - 1}-{2**64 - 1}")  # type: ignore[arg-type]
    source = RedisStreamSource(client, stream, uuid.uuid4().hex, "c0")
    try:
        ids = [m for page in source.history(0, 1) for m in page.ids]
    finally:
        source.close()
    assert ids == ["1-1", f"{2**64 - 1}-{2**64 - 1}"]
