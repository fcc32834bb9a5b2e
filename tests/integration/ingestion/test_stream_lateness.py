"""Events that reach the stream later than the view's lateness are quarantined, not applied.

The rebuild after a restart re-reads the stream only from the resume point less the longest window and
the lateness. An event applied live although it arrived later (found in review) was no longer in the
rebuilt windows, with the events it had been aggregated with: the next value emitted dropped them, and
the aggregates depended on when the materializer restarted. Refused with a reason (counted as
quarantined), the values are the same with and without a restart. Real redis-server, SQLite, Parquet
offline store."""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path

import pytest
import redis

from clients.aether.v1 import feature_registry_pb2 as pb
from control_plane.db import read_session
from control_plane.features.registry import FeatureRegistry
from control_plane.ingestion import quarantine
from control_plane.ingestion.streaming.materializer import StreamMaterializer
from control_plane.ingestion.streaming.options import MaterializerOptions
from control_plane.ingestion.streaming.redis_source import RedisStreamSource
from control_plane.offline.store import OfflineStore
from tests.integration.ingestion.streaming_support import read_online, registry_db
from tests.integration.ingestion.test_stream_restart import (
    HOUR_MS,
    LATENESS_S,
    TAPS,
    Life,
    Tap,
    TapsRegistry,
    brute_force,
    live,
    publish_taps,
)

LATE_MS = 5 * HOUR_MS  # far beyond LATENESS_S (900 s)


@pytest.fixture
def taps(tmp_path: Path) -> TapsRegistry:
    """The taps view of test_stream_restart.py (1 h windows at most), in a registry of its own."""
    _url, sessions, _clicks, entity = registry_db(tmp_path)
    view = FeatureRegistry(sessions).create_feature_view(TAPS, pb.FeatureViewMetadata())
    return TapsRegistry(sessions, view, entity)


def _run(
    taps: TapsRegistry, redis_url: str, lives: list[Life | None]
) -> tuple[list[float], int, list[quarantine.QuarantinedRecord]]:
    """A on time, then B and C of the same sensor 5 h late, through one materializer per life; returns
    the online values, the quarantined count of all lives, and the run's quarantined records."""
    client = redis.Redis.from_url(redis_url)
    stream, group = f"events:taps:{uuid.uuid4().hex}", uuid.uuid4().hex
    online_keys = list(client.scan_iter(match="ae:*:taps:v*"))
    if online_keys:
        client.delete(*online_keys)
    base_ms = int(time.time() * 1000) - 12 * HOUR_MS
    events = [Tap(0, 0, 0, 10), Tap(0, 1800, LATE_MS, 1), Tap(0, 1900, LATE_MS, 1)]
    publish_taps(client, stream, base_ms, events)
    undelivered, quarantined, run_id = len(events), 0, ""
    with tempfile.TemporaryDirectory() as folder:
        offline = OfflineStore(folder)
        for index, life in enumerate(lives):
            source = RedisStreamSource(client, stream, group, f"c{index}")
            m = StreamMaterializer(
                taps.view, taps.entity, source, client, taps.sessions, offline,
                MaterializerOptions(group=group, lateness_s=LATENESS_S),
            )  # fmt: skip
            m.start()
            undelivered = live(m, life, 8, undelivered)
            quarantined += m.totals.quarantined
            run_id = m.run.run_id
            source.close()
    with read_session(taps.sessions) as session:
        records = quarantine.list_quarantined(session, view="taps", run_id=run_id)
    return read_online(client, taps.view, [0])[0], quarantined, records


@pytest.mark.parametrize(
    "lives", [[None], [Life(quota=2, pending=0), None], [Life(quota=1, pending=1), None]]
)
def test_events_later_than_the_lateness_are_quarantined_and_a_restart_changes_nothing(
    taps: TapsRegistry, redis_url: str, lives: list[Life | None]
) -> None:
    straight, quarantined, records = _run(taps, redis_url, [None])
    restarted, quarantined_restarted, records_restarted = _run(taps, redis_url, lives)

    # Only A is applied: sum_1h (index 1) is 10, not 10 + 1 + 1, with or without a restart.
    only_a = brute_force([(Tap(0, 0, 0, 10), 0, 0)])[0][-1]
    assert straight[1] == only_a[1] == 10.0
    assert restarted == straight
    assert quarantined == quarantined_restarted == 2
    for found in (records, records_restarted):
        assert len(found) == 2
        for record in found:
            assert "is 5 h before its arrival in the stream" in record.reason, record.reason
            assert "the view allows 900 s of lateness" in record.reason, record.reason


def test_an_event_exactly_at_the_lateness_is_applied(taps: TapsRegistry, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    stream, group = f"events:taps:{uuid.uuid4().hex}", uuid.uuid4().hex
    base_ms = int(time.time() * 1000) - 12 * HOUR_MS
    events = [Tap(1, 0, 0, 10), Tap(1, 60, LATENESS_S * 1000, 1), Tap(1, 120, LATENESS_S * 1000 + 1, 1)]
    publish_taps(client, stream, base_ms, events)
    with tempfile.TemporaryDirectory() as folder:
        source = RedisStreamSource(client, stream, group, "c0")
        m = StreamMaterializer(
            taps.view, taps.entity, source, client, taps.sessions,
            OfflineStore(folder), MaterializerOptions(group=group, lateness_s=LATENESS_S),
        )  # fmt: skip
        m.start()
        live(m, None, 8, len(events))
        source.close()
    assert (m.totals.accepted, m.totals.quarantined) == (2, 1)
    assert read_online(client, taps.view, [1])[1][1] == 11.0
