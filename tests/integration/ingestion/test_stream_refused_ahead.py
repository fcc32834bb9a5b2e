"""Refused stream ids far ahead of the clock leave the rejected set, and are still counted once.

The applied / rejected id sets are trimmed below the rebuild's start (the group's resume point, never
later than the clock, less the longest window, the lateness and the skew), each member scored by its
stream time. A producer may set an id far ahead (``XADD key <ms>-0`` with ms years ahead, or past the
packing of the tie-break: ``test_stream_id_order.py``), and every ``*`` id after it continues in that
millisecond: each such message is refused (later than the lateness, or unorderable), and its member,
scored years ahead, was below no trim point. Found in review: one member leaked per such id, without
bound. Now a refused id ahead of the clock is kept apart, scored by the time it was refused, and trimmed
as the others once it is acknowledged; the newest one trimmed is kept
(``StateKeys.refused_ahead_through``) so that a group lost alone comes back after it, and the entries
trimmed are not read and counted a second time. Real redis-server, SQLite, Parquet offline store."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
import redis

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2 as t
from control_plane.db import read_session
from control_plane.features.registry import FeatureRegistry
from control_plane.ingestion import quarantine
from control_plane.ingestion.streaming.commit import COMMITTED, Committer, Trim
from control_plane.ingestion.streaming.materializer import REJECTED_RECORDS, StreamMaterializer
from control_plane.ingestion.streaming.options import MaterializerOptions
from control_plane.ingestion.streaming.redis_source import RedisStreamSource
from control_plane.ingestion.streaming.state_keys import StateKeys
from control_plane.offline.store import OfflineStore
from tests.integration.ingestion.streaming_support import registry_db, run_until_idle

pytestmark = pytest.mark.integration

# One-second windows and no lateness: the trim point passes an id refused now after about a second.
BLIPS = pb.FeatureViewSpec(
    name="blips",
    entity="sensor",
    source=pb.Source(kind="stream", uri="events:blips"),
    features=[pb.Feature(name="n_1s", value_type=t.INT64)],
    aggregations=[pb.Aggregation(column="amount", function="count", window_seconds=1, output="n_1s")],
)
# Events 2 s ahead of their arrival (``_xadd``) are within this skew; it is part of the rebuild's reach.
SKEW_S = 3
REACH_S = 1 + SKEW_S  # the longest window plus the lateness plus the skew
TEN_YEARS_MS = 10 * 365 * 86_400_000


def _xadd(client: redis.Redis, stream: str, message_id: str = "*") -> str:
    # Two seconds ahead: with no lateness, an event reaching the stream after its event time is refused.
    event_ts = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    fields = {"sensor_id": "3", "event_ts": event_ts, "amount": "1"}
    return client.xadd(stream, fields, id=message_id).decode()  # type: ignore[arg-type, union-attr]


@pytest.mark.parametrize("ahead", ["years", "past_the_packing"])
def test_refused_ids_ahead_of_the_clock_are_trimmed_and_a_lost_group_counts_none_twice(
    tmp_path: Path, redis_url: str, ahead: str
) -> None:
    _url, sessions, _clicks, entity = registry_db(tmp_path)
    view = FeatureRegistry(sessions).create_feature_view(BLIPS, pb.FeatureViewMetadata())
    client = redis.Redis.from_url(redis_url)
    stream, group = f"events:blips:{uuid.uuid4().hex}", uuid.uuid4().hex
    options = MaterializerOptions(group=group, lateness_s=0, trim_every_s=0, block_ms=10, reclaim_idle_ms=0)
    keys = StateKeys.of("blips", view.version, group)
    source = RedisStreamSource(client, stream, group, "c0", max_future_skew_s=SKEW_S)
    offline = OfflineStore(str(tmp_path / "offline"))
    m = StreamMaterializer(view, entity, source, client, sessions, offline, options)
    m.start()

    on_time = [_xadd(client, stream) for _ in range(2)]
    first_ms = int(time.time() * 1000) + TEN_YEARS_MS if ahead == "years" else 2**63
    refused = [_xadd(client, stream, f"{first_ms}-0")] + [_xadd(client, stream) for _ in range(4)]
    assert all(i.startswith(f"{first_ms}-") for i in refused)  # `*` continues in the id set ahead
    run_until_idle(m)
    assert (m.totals.accepted, m.totals.quarantined) == (2, 5)
    assert int(client.zcard(keys.rejected)) + int(client.zcard(keys.refused_ahead)) == 5

    time.sleep(REACH_S + 0.5)  # the trim point passes the time the ids were refused
    refused.append(_xadd(client, stream))
    run_until_idle(m)  # its commit trims
    # Only the id of the last batch is left; before, the five refused earlier stayed (years, or for ever).
    assert int(client.zcard(keys.rejected)) + int(client.zcard(keys.refused_ahead)) == 1
    assert client.get(keys.refused_ahead_through) == refused[-2].encode()
    totals = m.totals
    assert totals.received == totals.accepted + totals.quarantined + totals.duplicates
    assert (totals.accepted, totals.quarantined, totals.duplicates) == (2, 6, 0)

    # The group lost alone comes back after the refused ids trimmed: they are not counted again; the
    # one still in the set is read again and skipped as a duplicate.
    assert client.xgroup_destroy(stream, group)
    refused.append(_xadd(client, stream))
    run_until_idle(m)
    m.flush()
    source.close()
    totals = m.totals
    assert totals.received == totals.accepted + totals.quarantined + totals.duplicates
    assert (totals.accepted, totals.quarantined, totals.duplicates) == (2, 7, 1)
    with read_session(sessions) as session:
        runs = quarantine.list_runs(session, "blips")
        records = quarantine.list_quarantined(session, view="blips", run_id=m.run.run_id)
    assert [(r.accepted, r.quarantined) for r in runs] == [(2, 7)]
    assert sorted(r.record_key for r in records) == sorted(refused)
    assert not set(on_time) & {r.record_key for r in records}


def test_a_refused_id_ahead_is_kept_while_an_entry_before_it_is_pending(redis_url: str) -> None:
    """A group lost alone comes back after the greatest refused id ahead trimmed, so none is trimmed
    while an entry before it is still pending (delivered to a consumer that died, reclaimed later):
    that entry would be skipped, never counted. Committer against a real stream."""
    client = redis.Redis.from_url(redis_url)
    stream, group = f"events:ahead:{uuid.uuid4().hex}", "g"
    keys = StateKeys.of("clicks", 1, uuid.uuid4().hex)
    client.set(keys.owner, "me")
    first_ms = int(time.time() * 1000) + TEN_YEARS_MS
    ids = [client.xadd(stream, {"n": str(n)}, id=f"{first_ms}-{n}").decode() for n in range(2)]  # type: ignore[union-attr]
    client.xgroup_create(stream, group, id="0")
    client.xreadgroup(group, "c1", {stream: ">"}, count=2)  # both pending
    committer = Committer(client, keys, stream, group, "me")
    past_now = Trim(below_ms=int(time.time() * 1000) + 60_000)  # below it: every id refused so far

    def refuse(receipt_id: str, message_id: str) -> None:
        assert committer.begin([message_id]) == set()
        records = pa.table(
            {"record_key": [message_id], "payload": ["{}"], "reason": ["late"]}, schema=REJECTED_RECORDS
        )
        empty = pa.table({"sensor_id": pa.array([], pa.int64())})
        outcome = committer.commit(
            receipt_id, [], [message_id], [], None, empty, records, lambda i: [first_ms] * len(i), past_now
        )
        assert outcome == COMMITTED

    later = [f"{first_ms}-{n}" for n in (2, 3)]  # batches of their own after those two
    refuse("r1", ids[1])  # the later one first: the earlier one stays pending
    refuse("r2", later[0])  # a commit that trims: ids[0] is pending below ids[1], which stays
    assert client.zscore(keys.refused_ahead, ids[1]) is not None
    assert client.get(keys.refused_ahead_through) is None
    refuse("r3", ids[0])  # still pending while its commit trims: nothing goes
    assert client.zcard(keys.refused_ahead) == 3
    refuse("r4", later[1])  # nothing pending now: every id refused before this batch goes
    assert client.zrange(keys.refused_ahead, 0, -1) == [later[1].encode()]
    assert client.get(keys.refused_ahead_through) == later[0].encode()
    committer.close()


def test_a_lost_group_comes_back_after_the_trimmed_refused_id_without_a_trim_point(redis_url: str) -> None:
    """The trimmed refused id alone places a lost group (the trim point removed by hand: every commit that
    trims a refused id ahead raises it). Before, the script compared it with ``0`` and failed."""
    client = redis.Redis.from_url(redis_url)
    stream, group = f"events:ahead:{uuid.uuid4().hex}", "g"
    keys = StateKeys.of("clicks", 1, uuid.uuid4().hex)
    first_ms = int(time.time() * 1000) + TEN_YEARS_MS
    ids = [client.xadd(stream, {"n": str(n)}, id=f"{first_ms}-{n}").decode() for n in range(3)]  # type: ignore[union-attr]
    client.set(keys.refused_ahead_through, ids[1])
    source = RedisStreamSource(client, stream, group, "c0")
    source.processed_below(keys)
    assert source.read(10, 10).ids == ids[2:]
    source.close()
