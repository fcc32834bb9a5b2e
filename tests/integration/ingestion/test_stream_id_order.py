"""Stream ids the tie-break of ``last`` cannot place exactly are quarantined, never silently misordered.

Events of one entity with the same event time are ordered by their place in the stream, packed into one
int64 (``id_sequence``: milliseconds << 20 | sequence). Redis allows both parts of an id up to 2**64 - 1,
and a producer may set them (``XADD key 8796093022208-0``; auto ids then continue in that millisecond).
Found in review: milliseconds from 2**43 on wrapped the packed number around (a later entry ordered
before an earlier one), sequences from 2**20 on were capped (later entries tied), and milliseconds from
2**63 on ended the materializer in an OverflowError (read again at every restart). Now such ids are
quarantined with a reason; every id kept is ordered exactly (property test against tuple order).
Real redis-server, SQLite, Parquet offline store."""

from __future__ import annotations

import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control_plane.db import read_session
from control_plane.ingestion import quarantine
from control_plane.ingestion.streaming.materializer import StreamMaterializer
from control_plane.ingestion.streaming.options import MaterializerOptions
from control_plane.ingestion.streaming.redis_source import RedisStreamSource
from control_plane.ingestion.streaming.source import redis_id_problems
from control_plane.offline.store import OfflineStore
from tests.integration.ingestion.streaming_support import read_online
from tests.integration.ingestion.taps_stream import taps_registry
from tests.integration.ingestion.test_stream_restart import TapsRegistry, live

U64 = 2**64 - 1
MS_LIMIT, SEQUENCE_LIMIT = 2**43, 2**20  # the first milliseconds / sequence the packing cannot hold
# Events at year 2248 in stream time and now in event time: only a lateness (and a skew ahead of the
# clock) of centuries accepts them.
CENTURIES_S = 400 * 365 * 86_400


@pytest.fixture
def taps(tmp_path: Path) -> TapsRegistry:
    """The taps view of test_stream_restart.py (``last_1h`` of amount), in a registry of its own."""
    return taps_registry(tmp_path)


def test_ids_past_the_packing_are_quarantined_and_the_rest_ordered(
    taps: TapsRegistry, redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    stream, group = f"events:taps:{uuid.uuid4().hex}", uuid.uuid4().hex
    event_ts = datetime.fromtimestamp(int(time.time()) - 60, UTC).isoformat()  # one event time for all
    ids = [
        f"{MS_LIMIT - 1}-0",  # the greatest milliseconds packed exactly
        f"{MS_LIMIT - 1}-{SEQUENCE_LIMIT - 1}",  # the greatest sequence: orders after the first
        f"{MS_LIMIT - 1}-{SEQUENCE_LIMIT}",  # capped before: tied with the one above, and won
        f"{MS_LIMIT}-0",  # wrapped before: ordered before the first, and lost
        f"{2**63}-0",  # an OverflowError before
        f"{U64}-{U64}",  # the greatest id Redis allows
    ]
    for amount, message_id in enumerate(ids, start=1):
        fields = {"sensor_id": "4", "event_ts": event_ts, "amount": str(amount)}
        client.xadd(stream, fields, id=message_id)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as folder:
        # Ids at year 2248 are ahead of the clock as well: only a skew of centuries lets them be ordered.
        source = RedisStreamSource(client, stream, group, "c0", max_future_skew_s=CENTURIES_S)
        m = StreamMaterializer(
            taps.view, taps.entity, source, client, taps.sessions, OfflineStore(folder),
            MaterializerOptions(group=group, lateness_s=CENTURIES_S),
        )  # fmt: skip
        m.start()
        live(m, None, 8, len(ids))
        source.close()
    assert (m.totals.received, m.totals.accepted, m.totals.quarantined) == (6, 2, 4)
    assert read_online(client, taps.view, [4])[4][5] == 2.0  # last_1h: the later of the two kept
    with read_session(taps.sessions) as session:
        records = quarantine.list_quarantined(session, view="taps", run_id=m.run.run_id)
    reasons = {record.record_key: record.reason for record in records}
    assert sorted(reasons) == sorted(ids[2:])
    assert reasons[ids[2]].startswith(
        f"stream id {ids[2]}: sequence {SEQUENCE_LIMIT} is past {SEQUENCE_LIMIT - 1}"
    )
    for message_id in ids[3:]:
        ms = message_id.partition("-")[0]
        assert reasons[message_id].startswith(
            f"stream id {message_id}: milliseconds {ms} are past {MS_LIMIT - 1}"
        )
    for reason in reasons.values():
        assert "cannot be ordered exactly among the stream's entries" in reason, reason


# Both parts of an id over Redis's whole range, most of them near the packing's limits.
PART = st.one_of(
    st.integers(0, U64),
    st.integers(MS_LIMIT - 3, MS_LIMIT + 3),
    st.integers(SEQUENCE_LIMIT - 3, SEQUENCE_LIMIT + 3),
    st.integers(2**63 - 2, 2**63 + 2),
    st.integers(0, 5),
    st.integers(1_700_000_000_000, 1_800_000_000_000),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.tuples(PART, PART), min_size=1, max_size=40))
def test_every_id_kept_is_ordered_as_redis_orders_it(redis_url: str, parts: list[tuple[int, int]]) -> None:
    """Brute force: Redis orders ids as (milliseconds, sequence) tuples. The ids not refused keep
    exactly that order in ``RedisStreamSource.order`` (ties only between equal ids); the refused ones
    are exactly those whose milliseconds or sequence the packing cannot hold."""
    ids = [f"{ms}-{seq}" for ms, seq in parts]
    refused = redis_id_problems(ids)
    assert set(refused) == {i for i, (ms, seq) in enumerate(parts) if ms >= MS_LIMIT or seq >= SEQUENCE_LIMIT}
    kept = [i for i in range(len(ids)) if i not in refused]
    source = RedisStreamSource(redis.Redis.from_url(redis_url), "events:order", "g", "c0")
    order = source.order([ids[i] for i in kept])
    source.close()
    for a, first in enumerate(kept):
        for b, second in enumerate(kept):
            assert (order[a] < order[b]) == (parts[first] < parts[second]), (ids[first], ids[second])
            assert (order[a] == order[b]) == (parts[first] == parts[second]), (ids[first], ids[second])
