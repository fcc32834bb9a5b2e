"""Two consumer groups of one view on hosts whose clocks disagree: the online value and the offline
history's latest row agree at every point, and both end at the stream's last value of the event time.

Events of one entity with the same event time are ordered online by the blob's write time
(``WRITE_IF_NOT_OLDER``) and offline by the history row's ingestion time, the same microseconds: each
online write is the last row of its batch for the entity, the greatest (event time, ingestion time) the
batch emitted for it, so the value online is the greatest of all rows written, which is what a training
set reads as the latest. Across groups these times come from each host's clock (a successor of one group
starts above its predecessor's, ``StateKeys.ingested_high``; groups share nothing), so the group that
writes later wins a tie, not the one further in the stream: while a group is behind the other in the
stream, its older value of an event time can stand online and offline alike, until it catches up and
writes the same value the other did. Real redis-server, SQLite, Parquet offline store; the clocks ahead
and behind are faults injected by name (``clock_shifted``): no two hosts here."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

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

pytestmark = pytest.mark.integration

HOUR_US = 3_600_000_000
LAST_1H = 5  # the index of last_1h among the taps view's features


def clock_shifted(us: int) -> Callable[[], int]:
    """A host clock ``us`` ahead of this one (behind when negative): a fault, both groups run here."""
    return lambda: time.time_ns() // 1000 + us


@pytest.mark.parametrize("lagging_shift_us", [HOUR_US, -HOUR_US], ids=["lagging_ahead", "lagging_behind"])
def test_two_groups_online_agrees_with_the_offline_latest_row_and_both_end_at_the_last_value(
    tmp_path: Path, redis_url: str, lagging_shift_us: int
) -> None:
    taps: TapsRegistry = taps_registry(tmp_path)
    client = redis.Redis.from_url(redis_url)
    stream = f"events:taps:{uuid.uuid4().hex}"
    event_ts = datetime.fromtimestamp(int(time.time()) - 60, UTC).isoformat()  # one event time for all
    for amount in (1, 2, 3):  # later in the stream: the last value of the event time
        client.xadd(stream, {"sensor_id": "6", "event_ts": event_ts, "amount": str(amount)})
    offline = OfflineStore(str(tmp_path / "offline"))

    def group(name: str, shift_us: int) -> StreamMaterializer:
        source = RedisStreamSource(client, stream, name, f"{name}-c0")
        options = MaterializerOptions(group=name)
        m = StreamMaterializer(
            taps.view, taps.entity, source, client, taps.sessions, offline, options,
            clock_us=clock_shifted(shift_us),
        )  # fmt: skip
        m.start()
        return m

    def online_and_latest_row() -> tuple[float, float]:
        history = pa.Table.from_batches(list(offline.scan("taps", taps.view.version)))
        rows = history.sort_by([("event_ts", "ascending"), ("ingested_ts", "ascending")]).to_pylist()
        return read_online(client, taps.view, [6])[6][LAST_1H], float(rows[-1]["last_1h"])

    ahead = group(f"ahead-{uuid.uuid4().hex}", -lagging_shift_us)  # the group further in the stream
    lagging = group(f"lagging-{uuid.uuid4().hex}", lagging_shift_us)
    live(ahead, None, 8, 3)  # all three
    online, latest = online_and_latest_row()
    assert online == latest == 3.0
    live(lagging, None, 1, 1)  # the first only: its value, written later or earlier by its clock
    online, latest = online_and_latest_row()
    assert online == latest == (1.0 if lagging_shift_us > 0 else 3.0)
    live(lagging, None, 1, 2)  # caught up: it writes the value the other group did
    online, latest = online_and_latest_row()
    assert online == latest == 3.0
