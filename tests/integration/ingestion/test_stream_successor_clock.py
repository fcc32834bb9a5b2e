"""A successor whose clock is behind its predecessor's still wins an equal-event-time tie.

Online, a value replaces another of the same event time only when written later (``WRITE_IF_NOT_OLDER``
compares the blobs' write times), and offline the history rows of one event time are ordered by their
ingestion time, as training sets read them. A materializer's write / ingestion times come from its
host's clock, made strictly increasing within the process only. Found in review: a successor on a host
whose clock was behind its predecessor's wrote the newer ``last`` of an equal event time with an older
write time, so the online value kept the predecessor's (until an event with a later event time came),
and the history row sorted before the predecessor's. Now each commit stores the greatest ingestion time
written (``StateKeys.ingested_high``) and a successor starts above it. Real redis-server, SQLite, Parquet
offline store; the clock ahead is a fault injected by name (``clock_ahead``): no two hosts here."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import redis

from control_plane.ingestion.streaming.materializer import StreamMaterializer
from control_plane.ingestion.streaming.options import MaterializerOptions
from control_plane.ingestion.streaming.redis_source import RedisStreamSource
from control_plane.offline.store import OfflineStore
from tests.integration.ingestion.streaming_support import read_online
from tests.integration.ingestion.taps_stream import taps_registry
from tests.integration.ingestion.test_stream_restart import TapsRegistry, live

HOUR_US = 3_600_000_000
LAST_1H = 5  # the index of last_1h among the taps view's features


@pytest.fixture
def taps(tmp_path: Path) -> TapsRegistry:
    return taps_registry(tmp_path)


def clock_ahead(us: int) -> Callable[[], int]:
    """A host clock ``us`` ahead of this one: the predecessor's (a fault: both run on this host)."""
    return lambda: time.time_ns() // 1000 + us


def test_a_successor_behind_its_predecessors_clock_wins_an_equal_event_time_tie(
    taps: TapsRegistry, redis_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url)
    stream, group = f"events:taps:{uuid.uuid4().hex}", uuid.uuid4().hex
    event_ts = datetime.fromtimestamp(int(time.time()) - 60, UTC).isoformat()  # one event time for both
    for amount in (1, 2):  # the second is later in the stream: its value is the last
        client.xadd(stream, {"sensor_id": "6", "event_ts": event_ts, "amount": str(amount)})
    offline = OfflineStore(str(tmp_path / "offline"))
    options = MaterializerOptions(group=group)
    for life, clock in enumerate([clock_ahead(HOUR_US), None]):  # the predecessor's clock is 1 h ahead
        source = RedisStreamSource(client, stream, group, f"c{life}")
        clocked = {} if clock is None else {"clock_us": clock}
        m = StreamMaterializer(
            taps.view, taps.entity, source, client, taps.sessions, offline, options, **clocked
        )
        m.start()
        live(m, None, 1, 1)  # one event each
        source.close()

    assert read_online(client, taps.view, [6])[6][LAST_1H] == 2.0
    history = pa.Table.from_batches(list(offline.scan("taps", taps.view.version)))
    latest = history.sort_by([("event_ts", "ascending"), ("ingested_ts", "ascending")]).to_pylist()[-1]
    assert latest["last_1h"] == 2.0  # a training set reads the same row as the latest


def test_a_batch_committed_again_after_a_flush_still_stores_the_successors_floor(
    taps: TapsRegistry, redis_url: str, tmp_path: Path
) -> None:
    """A FLUSHALL between a batch's check and its MULTI/EXEC refuses the EXEC, and the commit runs again
    into the new data (``Committer.commit``). Found in review: that second commit left out the greatest
    ingestion time, so a successor started after it found none and wrote the newer value of an equal
    event time with its clock, behind: the predecessor's value, committed again, stayed online."""
    client = redis.Redis.from_url(redis_url)
    stream, group = f"events:taps:{uuid.uuid4().hex}", uuid.uuid4().hex
    event_ts = datetime.fromtimestamp(int(time.time()) - 60, UTC).isoformat()  # one event time for both
    offline = OfflineStore(str(tmp_path / "offline"))
    options = MaterializerOptions(group=group)
    client.xadd(stream, {"sensor_id": "6", "event_ts": event_ts, "amount": "1"})
    source = RedisStreamSource(client, stream, group, "c0")
    first = StreamMaterializer(
        taps.view, taps.entity, source, client, taps.sessions, offline, options, clock_us=clock_ahead(HOUR_US)
    )
    first.start()
    committer = first._committer
    commit = committer.commit

    def flushing_first(*args: Any, **kwargs: Any) -> int:
        """Fault wrapper, once: a FLUSHALL lands after the batch's check, before its MULTI/EXEC."""
        committer.commit = commit  # type: ignore[method-assign]
        client.flushall()
        return commit(*args, **kwargs)

    committer.commit = flushing_first  # type: ignore[method-assign]
    live(first, None, 1, 1)
    source.close()
    assert client.get(first.keys.ingested_high) == str(first.windows.last_ingested_us).encode()

    client.xadd(stream, {"sensor_id": "6", "event_ts": event_ts, "amount": "2"})  # the new stream's
    source = RedisStreamSource(client, stream, group, "c1")
    second = StreamMaterializer(taps.view, taps.entity, source, client, taps.sessions, offline, options)
    second.start()
    live(second, None, 1, 1)
    source.close()
    assert read_online(client, taps.view, [6])[6][LAST_1H] == 2.0
