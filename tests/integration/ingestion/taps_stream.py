"""The taps view of test_stream_restart.py (windows of 1 h at most, in 10-minute buckets) in a registry of
its own, and one run of its events through a stream: published with explicit ids at their arrival, then
read by one materializer per life (test_stream_restart.Life), each its own consumer of one group. Shared
by the tests that feed the taps view a handful of events and check what was applied and quarantined
(test_stream_lateness.py, test_stream_older_than_windows.py)."""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import redis

from clients.aether.v1 import feature_registry_pb2 as pb
from control_plane.db import read_session
from control_plane.features.registry import FeatureRegistry
from control_plane.ingestion import quarantine
from control_plane.ingestion.streaming.materializer import StreamMaterializer
from control_plane.ingestion.streaming.options import BatchStats, MaterializerOptions
from control_plane.ingestion.streaming.redis_source import RedisStreamSource
from control_plane.offline.store import OfflineStore
from tests.integration.ingestion.streaming_support import read_online, registry_db
from tests.integration.ingestion.test_stream_restart import TAPS, Life, Tap, TapsRegistry, live, publish_taps


def taps_registry(tmp_path: Path) -> TapsRegistry:
    """The taps view registered in a registry of its own (a SQLite file under ``tmp_path``)."""
    _url, sessions, _clicks, entity = registry_db(tmp_path)
    view = FeatureRegistry(sessions).create_feature_view(TAPS, pb.FeatureViewMetadata())
    return TapsRegistry(sessions, view, entity)


@dataclass
class TapsRun:
    """What a run left: the first event's sensor's online values, the totals of all lives, how many
    history rows reached the offline store, and the run's quarantined records."""

    online: list[float]
    totals: BatchStats = field(default_factory=BatchStats)
    history_rows: int = 0
    records: list[quarantine.QuarantinedRecord] = field(default_factory=list)


def run_taps(
    taps: TapsRegistry,
    redis_url: str,
    events: list[Tap],
    lives: list[Life | None],
    lateness_s: int,
    base_ms: int,
) -> TapsRun:
    """``events`` (times relative to ``base_ms``) through a stream and group of their own, one materializer
    per life (``None``: until the stream is drained), with the taps view's online values cleared first."""
    client = redis.Redis.from_url(redis_url)
    stream, group = f"events:taps:{uuid.uuid4().hex}", uuid.uuid4().hex
    online_keys = list(client.scan_iter(match="ae:*:taps:v*"))
    if online_keys:
        client.delete(*online_keys)
    publish_taps(client, stream, base_ms, events)
    undelivered, totals, run_id = len(events), BatchStats(), ""
    with tempfile.TemporaryDirectory() as folder:
        offline = OfflineStore(folder)
        for index, life in enumerate(lives):
            source = RedisStreamSource(client, stream, group, f"c{index}")
            m = StreamMaterializer(
                taps.view, taps.entity, source, client, taps.sessions, offline,
                MaterializerOptions(group=group, lateness_s=lateness_s),
            )  # fmt: skip
            m.start()
            undelivered = live(m, life, 8, undelivered)
            for name in ("received", "accepted", "quarantined", "duplicates"):
                setattr(totals, name, getattr(totals, name) + getattr(m.totals, name))
            run_id = m.run.run_id
            source.close()
        history = sum(batch.num_rows for batch in offline.scan("taps", taps.view.version))
    with read_session(taps.sessions) as session:
        records = quarantine.list_quarantined(session, view="taps", run_id=run_id)
    sensor = events[0].sensor
    return TapsRun(read_online(client, taps.view, [sensor])[sensor], totals, history, records)
