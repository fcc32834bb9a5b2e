"""The batch commit (WATCH + MULTI/EXEC) and the outbox against a real redis-server and SQLite: a commit
is refused whole when ownership or the applied ids changed after ``begin``, a retry finds its own
receipt, and one drain applies many receipts once, even when replayed after a crash."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import redis
import redis.asyncio

from control_plane.db import read_session
from control_plane.features.online_cleanup import OnlineCleanup, PendingCleanup, remove_online_keys
from control_plane.features.registry import FeatureRegistry
from control_plane.ingestion import quarantine
from control_plane.ingestion.quarantine import RunSource
from control_plane.ingestion.streaming.commit import (
    ALREADY_COMMITTED,
    COMMITTED,
    DUPLICATE,
    FENCED,
    Committer,
    Trim,
    ipc_bytes,
)
from control_plane.ingestion.streaming.materializer import REJECTED_RECORDS, StreamMaterializer, ViewDeleted
from control_plane.ingestion.streaming.options import MaterializerOptions
from control_plane.ingestion.streaming.outbox import Receipt, drain
from control_plane.ingestion.streaming.redis_source import RedisStreamSource
from control_plane.ingestion.streaming.state_keys import StateKeys
from control_plane.offline.store import TIMESTAMP_TYPE, OfflineStore
from kernels.packed_blob import encode
from tests.integration.ingestion.streaming_support import (
    Event,
    publish,
    recent_events,
    registry_db,
    started_materializer,
)

STREAM = "events:commit"
KEYS = StateKeys.of("clicks", 1, "g")
RUN = RunSource("stream:test", "clicks", 1, "stream", STREAM)


def pending_ids(client: redis.Redis, count: int) -> list[str]:
    """``count`` messages delivered to consumer c1 and not yet acknowledged."""
    for i in range(count):
        client.xadd(STREAM, {"n": str(i)})
    client.xgroup_create(STREAM, "g", id="0")
    reply: Any = client.xreadgroup("g", "c1", {STREAM: ">"}, count=count)
    return [entry_id.decode() for entry_id, _ in reply[0][1]]


def history(n: int, start: int = 0) -> pa.Table:
    stamps = pa.array([1_700_000_000_000_000 + i for i in range(start, start + n)], pa.int64())
    return pa.table(
        {
            "sensor_id": pa.array(range(start, start + n), pa.int64()),
            "event_ts": stamps.cast(TIMESTAMP_TYPE),
            "ingested_ts": stamps.cast(TIMESTAMP_TYPE),
            "clicks_10m": pa.array([1] * n, pa.int64()),
        }
    )


def rejected(keys: list[str]) -> pa.Table:
    return pa.table(
        {"record_key": keys, "payload": ["{}"] * len(keys), "reason": ["amount: bad"] * len(keys)},
        schema=REJECTED_RECORDS,
    )


def stream_ms(ids: Sequence[str]) -> list[int]:
    """Stream times of Redis stream ids, as ``RedisStreamSource.stream_times_ms`` gives them."""
    return [int(i.partition("-")[0]) for i in ids]


def commit(committer: Committer, receipt_id: str, ids: list[str]) -> int:
    blobs = [(f"ae:{{sensor:{i}}}:clicks:v1".encode(), b"blob%d" % i) for i in range(len(ids))]
    return committer.commit(
        receipt_id, ids[1:], ids[:1], blobs, None, history(len(ids) - 1), rejected(ids[:1]), stream_ms
    )


def test_commit_writes_everything_and_a_retry_finds_its_receipt(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    ids = pending_ids(client, 5)
    client.set(KEYS.owner, "me")
    committer = Committer(client, KEYS, STREAM, "g", "me")
    assert committer.begin(ids) == set() and committer.owned
    assert commit(committer, "r1", ids) == COMMITTED
    assert client.zcard(KEYS.applied) == 4 and client.zcard(KEYS.rejected) == 1
    assert client.zscore(KEYS.applied, ids[1]) == int(ids[1].split("-")[0])
    assert client.get("ae:{sensor:3}:clicks:v1") == b"blob3"
    assert client.lrange(KEYS.outbox, 0, -1) == [KEYS.receipt("r1").encode()]
    assert client.xpending(STREAM, "g")["pending"] == 0
    # The same commit again, as after a reply lost with the connection: recognised, nothing added.
    retry = Committer(client, KEYS, STREAM, "g", "me")
    assert commit(retry, "r1", ids) == ALREADY_COMMITTED
    assert client.llen(KEYS.outbox) == 1
    assert retry.begin(ids) == set(ids)


def test_a_commit_is_refused_whole_when_fenced_or_ids_were_applied_since_begin(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    ids = pending_ids(client, 4)
    client.set(KEYS.owner, "old")
    committer = Committer(client, KEYS, STREAM, "g", "old")
    committer.begin(ids)
    client.set(KEYS.owner, "new")  # a newer materializer takes over between begin and commit
    assert commit(committer, "r1", ids) == FENCED
    client.set(KEYS.owner, "old")
    committer.begin(ids)
    client.zadd(KEYS.applied, {ids[2]: 0})  # another consumer applies one of the ids meanwhile
    assert commit(committer, "r2", ids) == DUPLICATE
    # Nothing of either refused commit happened.
    assert client.zcard(KEYS.applied) == 1 and client.zcard(KEYS.rejected) == 0
    assert client.get("ae:{sensor:1}:clicks:v1") is None and client.llen(KEYS.outbox) == 0
    assert client.xpending(STREAM, "g")["pending"] == 4


def test_one_drain_applies_many_receipts_once_even_when_replayed(tmp_path: Path, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    _url, sessions, _view, _entity = registry_db(tmp_path)
    offline = OfflineStore(str(tmp_path / "offline"))
    receipts = {f"r{i}": Receipt(history(10, 10 * i), rejected([f"{i}-0"]), 10) for i in range(3)}
    for receipt_id, receipt in receipts.items():
        fields = {
            "history": ipc_bytes(receipt.history),
            "rejected": ipc_bytes(receipt.rejected),
            "accepted": 10,
        }
        client.hset(KEYS.receipt(receipt_id), mapping=fields)  # type: ignore[arg-type]
        client.rpush(KEYS.outbox, KEYS.receipt(receipt_id))
    # Two receipts the caller still holds, one read back from Redis (a predecessor's).
    known = {i: receipts[i] for i in ("r0", "r2")}
    assert drain(client, KEYS, sessions, offline, RUN, known) == 3
    assert len(offline.files("clicks", 1)) == 1  # one Parquet file for the three batches
    rows = pa.Table.from_batches(list(offline.scan("clicks", 1)))
    assert sorted(rows.column("sensor_id").to_pylist()) == list(range(30))
    assert client.llen(KEYS.outbox) == 0 and not client.exists(KEYS.receipt("r1"))

    # A crash after the SQL commit and before the removal leaves the receipts in the outbox: the
    # next drain only removes them.
    client.hset(
        KEYS.receipt("r1"),
        mapping={
            "history": ipc_bytes(receipts["r1"].history),
            "rejected": ipc_bytes(receipts["r1"].rejected),
            "accepted": 10,
        },
    )
    client.rpush(KEYS.outbox, KEYS.receipt("r1"))
    assert drain(client, KEYS, sessions, offline, RUN) == 0
    assert client.llen(KEYS.outbox) == 0 and len(offline.files("clicks", 1)) == 1
    with read_session(sessions) as session:
        counts = quarantine.run_counts(session, RUN.run_id)
        keys = sorted(r.record_key for r in quarantine.list_quarantined(session, view="clicks"))
    assert (counts.records_in, counts.accepted, counts.quarantined) == (33, 30, 3)
    assert keys == ["0-0", "1-0", "2-0"]


def blob(event_us: int, value: float) -> bytes:
    return encode([value], np.dtype(np.float64), 1, event_us, 0)


def test_a_commit_never_overwrites_a_fresher_online_value(redis_url: str) -> None:
    """The commit wrote online values with a plain SET/MSET: a batch whose value for an entity is older
    than the one online (written by another consumer group of the view, or emitted for an event replayed
    after a restart, older than the state the materializer rebuilt) replaced the fresher value. Each key
    now gets batch ingestion's check inside the same MULTI/EXEC: the newest event time wins, a tie the
    later write, and the rest of the batch commits either way."""
    client = redis.Redis.from_url(redis_url)
    ids = pending_ids(client, 3)
    client.set(KEYS.owner, "me")
    stale, tie, newer = (f"ae:{{sensor:{i}}}:clicks:v1".encode() for i in range(3))
    june = 1_748_736_000_000_000
    for key in (stale, tie, newer):
        client.set(key, blob(june, 1.0))
    for px in (None, 60_000):  # MSET without expiry, SET ... PX with it
        committer = Committer(client, KEYS, STREAM, "g", "me")
        committer.begin(ids)
        client.script_flush()  # the check's script must not depend on Redis's script cache
        writes = [(stale, blob(june - 1, 2.0)), (tie, blob(june, 3.0)), (newer, blob(june + 1, 4.0))]
        assert (
            committer.commit(f"r{px}", ids, [], writes, px, history(3), rejected([]), stream_ms) == COMMITTED
        )
        assert client.get(stale) == blob(june, 1.0)
        assert client.get(tie) == blob(june, 3.0) and client.get(newer) == blob(june + 1, 4.0)
        if px is None:
            assert client.pttl(newer) == -1
        else:
            assert 0 < client.pttl(newer) <= px
        client.set(tie, blob(june, 1.0))
        client.set(newer, blob(june, 1.0))
        client.zrem(KEYS.applied, *ids)
    assert client.llen(KEYS.outbox) == 2


def test_a_trim_drops_old_ids_but_spares_held_ones_the_batch_and_those_below_its_floor(
    redis_url: str,
) -> None:
    """A Kafka commit's trim: ids scored below the trim point go, except those the source may deliver
    again (held: acknowledged behind a gap), which are raised to the trim point in whichever set holds
    them (and added to none), the batch's own ids whatever their record time, and members below the
    floor (Kafka ids an earlier version scored by their partition)."""
    client = redis.Redis.from_url(redis_url)
    client.set(KEYS.owner, "me")
    t = 1_760_000_000_000
    client.zadd(KEYS.applied, {"3-7": 3, "0-5": t - 500, "1-9": t - 400, "0-50": t + 100})
    client.zadd(KEYS.rejected, {"2-0": t - 300, "2-1": t - 200})
    times = {"0-60": t - 900, "0-61": t - 800}
    committer = Committer(client, KEYS, None, "g", "me")
    assert committer.begin(list(times)) == set()
    trim = Trim(below_ms=t, floor_ms=1 << 20, held=["1-9", "2-1", "4-4"])
    outcome = committer.commit(
        "r", ["0-60"], ["0-61"], [], None, history(1), rejected(["0-61"]),
        lambda ids: [times[i] for i in ids], trim,
    )  # fmt: skip
    assert outcome == COMMITTED
    assert dict(client.zrange(KEYS.applied, 0, -1, withscores=True)) == {
        b"3-7": 3,
        b"0-60": t - 900,
        b"1-9": t,
        b"0-50": t + 100,
    }
    assert dict(client.zrange(KEYS.rejected, 0, -1, withscores=True)) == {b"0-61": t - 800, b"2-1": t}
    assert client.get(KEYS.trimmed_below) == str(t).encode()


def test_a_commit_replaces_a_later_value_of_another_schema(redis_url: str) -> None:
    """Only a value of the same schema fingerprint is kept for its later event time: one of another schema
    (left by a deleted view of the same name, say) blocked every commit of the key for as long as it
    lived, and each read of it failed with DATA_LOSS."""
    client = redis.Redis.from_url(redis_url)
    ids = pending_ids(client, 2)
    client.set(KEYS.owner, "me")
    other, same = (f"ae:{{sensor:{i}}}:clicks:v1".encode() for i in range(2))
    june = 1_748_736_000_000_000
    client.set(other, encode([9.0, 9.0], np.dtype(np.float64), 2, june + 1, 0))
    client.set(same, blob(june + 1, 1.0))
    committer = Committer(client, KEYS, STREAM, "g", "me")
    committer.begin(ids)
    writes = [(other, blob(june, 2.0)), (same, blob(june, 2.0))]
    assert committer.commit("r", ids, [], writes, None, history(2), rejected([]), stream_ms) == COMMITTED
    assert client.get(other) == blob(june, 2.0)
    assert client.get(same) == blob(june + 1, 1.0)


def test_a_commit_of_thousands_of_keys_keeps_the_newest_value_of_each(redis_url: str) -> None:
    """The check runs a thousand keys a script call: across the calls' boundaries every key still ends up
    with the newer of its stored and committed values (times on both sides of 2**32 µs words)."""
    client = redis.Redis.from_url(redis_url)
    ids = pending_ids(client, 2)
    client.set(KEYS.owner, "me")
    rng = np.random.default_rng(5)
    n = 2_500
    base = 1_748_736_000_000_000
    stored = base + rng.integers(-(2**33), 2**33, n)
    sent = base + rng.integers(-(2**33), 2**33, n)
    keys = [f"ae:{{sensor:{i}}}:clicks:v1".encode() for i in range(n)]
    for key, event in zip(keys, stored.tolist(), strict=True):
        client.set(key, blob(event, 1.0))
    committer = Committer(client, KEYS, STREAM, "g", "me")
    committer.begin(ids)
    writes = [(key, blob(event, 2.0)) for key, event in zip(keys, sent.tolist(), strict=True)]
    assert committer.commit("big", ids, [], writes, None, history(2), rejected([]), stream_ms) == COMMITTED
    values = client.mget(keys)
    expected = [
        blob(new, 2.0) if new >= old else blob(old, 1.0)
        for old, new in zip(stored.tolist(), sent.tolist(), strict=True)
    ]
    assert values == expected
    assert 0 < sum(new >= old for old, new in zip(stored.tolist(), sent.tolist(), strict=True)) < n


async def test_a_commit_begun_before_the_view_was_deleted_writes_nothing(redis_url: str) -> None:
    # The delete's online cleanup fences the version before it scans for its keys: a batch begun before
    # that must not write behind the scan, where nothing would ever remove its keys.
    client = redis.Redis.from_url(redis_url)
    ids = pending_ids(client, 3)
    client.set(KEYS.owner, "me")
    committer = Committer(client, KEYS, STREAM, "g", "me")
    committer.begin(ids)
    cleanup = PendingCleanup("clicks", 1, "sensor")
    async with redis.asyncio.Redis.from_url(redis_url) as cleaner:
        assert await remove_online_keys(cleaner, cleanup) == 0
    assert commit(committer, "r1", ids) == FENCED
    assert committer.deleted and not committer.owned
    assert not client.keys("ae:*") and client.zcard(KEYS.applied) == 0 and client.llen(KEYS.outbox) == 0
    # Every later batch sees the version deleted at once.
    committer.begin(ids)
    assert committer.deleted and not committer.owned
    assert commit(committer, "r2", ids) == FENCED
    assert not client.keys("ae:*")
    # Another version of the name (created again after the delete) commits as before.
    others = StateKeys.of("clicks", 2, "g")
    client.set(others.owner, "me")
    newer = Committer(client, others, STREAM, "g", "me")
    newer.begin(ids)
    assert not newer.deleted and newer.owned


async def test_a_materializer_of_a_deleted_view_stops_and_leaves_no_online_keys(
    tmp_path: Path, redis_url: str
) -> None:
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    publish(client, recent_events(6))
    options = MaterializerOptions(count=3, block_ms=10)
    source, materializer = started_materializer(tmp_path, client, sessions, view, entity, options)
    assert materializer.process(source.read(3, 10)).accepted == 3
    assert sum(1 for _ in client.scan_iter("ae:*")) == 3

    FeatureRegistry(sessions).delete_feature_view("clicks")
    async with redis.asyncio.Redis.from_url(redis_url) as cleaner:
        assert [removed for _, removed in await OnlineCleanup(sessions, cleaner).run_once()] == [3]

    with pytest.raises(ViewDeleted, match="feature view 'clicks' version 1 was deleted"):
        materializer.process(source.read(3, 10))
    assert client.keys("ae:*") == []


async def test_a_materializer_stopped_by_a_delete_drains_its_outbox_and_leaves_no_state(
    tmp_path: Path, redis_url: str
) -> None:
    # Batches committed since the last drain (online values written, messages acknowledged) must still
    # reach the offline store and the run's counters: once the view is deleted nothing else drains them,
    # as no materializer can run for a deleted view.
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    now = datetime.now(UTC)
    events = [Event(i % 3, now - timedelta(seconds=60 - i), 1.0 + i) for i in range(8)]
    events[5].ts = now + timedelta(days=30)  # too far ahead: quarantined, and counted too
    publish(client, events)
    options = MaterializerOptions(count=3, block_ms=10)
    source = RedisStreamSource(client, "events:clicks", options.group, "c1")
    offline = OfflineStore(str(tmp_path / "offline"))
    materializer = StreamMaterializer(view, entity, source, client, sessions, offline, options)
    materializer.start()
    consumed = 0
    for _ in range(2):  # two committed batches, left in the outbox (``process`` does not drain)
        consumed += materializer.process(source.read(3, 10)).received
    assert consumed == 6 and client.llen(materializer.keys.outbox) == 2

    FeatureRegistry(sessions).delete_feature_view("clicks")
    async with redis.asyncio.Redis.from_url(redis_url) as cleaner:
        await OnlineCleanup(sessions, cleaner).run_once()
    with pytest.raises(ViewDeleted):
        materializer.step()

    with read_session(sessions) as session:
        counts = quarantine.run_counts(session, materializer.run.run_id)
    assert (counts.records_in, counts.accepted, counts.quarantined) == (consumed, 5, 1)
    stored = pa.Table.from_batches(list(offline.scan("clicks", 1)))
    assert stored.num_rows == 5
    assert client.keys("aether:materializer:*") == []
    assert client.keys("ae:*") == []


async def test_the_online_cleanup_removes_the_state_of_a_materializer_not_running_at_the_delete(
    tmp_path: Path, redis_url: str
) -> None:
    # A materializer stopped before the delete never sees it: its owner key, id sets and trim point
    # would stay in Redis for good. The cleanup removes them, for every group of the deleted version,
    # but leaves any receipt still waiting in an outbox (a materializer still running drains it).
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    publish(client, recent_events(3))
    options = MaterializerOptions(count=3, block_ms=10)
    _source, materializer = started_materializer(tmp_path, client, sessions, view, entity, options)
    assert materializer.step().accepted == 3
    materializer.flush()  # as a stopped materializer does
    keys = materializer.keys
    assert all(client.exists(k) for k in (keys.owner, keys.applied, keys.trimmed_below))
    other = StateKeys.of("clicks", 1, "other")
    client.zadd(other.rejected, {"1-0": 1})
    client.hset(other.receipt("r1"), "accepted", 0)
    client.rpush(other.outbox, other.receipt("r1"))
    untouched = [StateKeys.of("clicks", 11, "g").owner, StateKeys.of("clicks_x", 1, "g").owner]
    for key in untouched:
        client.set(key, "someone")

    FeatureRegistry(sessions).delete_feature_view("clicks")
    async with redis.asyncio.Redis.from_url(redis_url) as cleaner:
        await OnlineCleanup(sessions, cleaner).run_once()

    left = sorted(k.decode() for k in client.scan_iter(match="aether:materializer:*"))
    assert left == sorted([other.outbox, other.receipt("r1"), *untouched])


async def test_an_idle_materializer_notices_a_delete_and_stops_without_a_message(
    tmp_path: Path, redis_url: str
) -> None:
    # An idle materializer commits nothing, and only a commit found the delete's fence: it kept running,
    # its outbox undrained, until a message arrived (for a deleted view maybe never). It now looks every
    # ``status_every_s`` and stops as a refused commit does: outbox drained, state keys removed.
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    publish(client, recent_events(3))
    options = MaterializerOptions(count=3, block_ms=10, status_every_s=0.05)
    source, materializer = started_materializer(tmp_path, client, sessions, view, entity, options)
    assert materializer.process(source.read(3, 10)).accepted == 3  # left in the outbox
    FeatureRegistry(sessions).delete_feature_view("clicks")
    async with redis.asyncio.Redis.from_url(redis_url) as cleaner:
        await OnlineCleanup(sessions, cleaner).run_once()

    deadline = time.monotonic() + 2.0
    with pytest.raises(ViewDeleted):
        while time.monotonic() < deadline:  # no message arrives
            materializer.step()
    with read_session(sessions) as session:
        counts = quarantine.run_counts(session, materializer.run.run_id)
    assert (counts.records_in, counts.accepted) == (3, 3)
    assert client.keys("aether:materializer:*") == []
