"""The near cache on the read path against a real redis-server: repeated reads skip Redis, and every
change Redis makes (a write, a delete, an expiry, a flush, a restart) is seen by the next read once its
invalidation has arrived (``RedisClient.sync`` waits for that); a hypothesis run checks reads against a
model of the writes; a Redis that goes silent stops the cache from answering."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clients.errors import Unavailable
from control_plane.features.online_writer import OnlineWriter
from data_plane.catalog import Catalog, RegistryState
from data_plane.near_cache import NearCache, NearCacheStats
from data_plane.reader import MISSING, PRESENT, OnlineReader, ReadLimits, ReadResult
from data_plane.redis_client import RedisClient
from kernels.online_keys import online_key
from tests.support.redis_server import RedisServer
from tests.support.tcp_proxy import AnswerLosingProxy
from tests.unit.data_plane.registry_builders import floats, snapshot, view, writable

pytestmark = pytest.mark.integration

STATS = view("stats", floats(2))
HOURLY = view("hourly", floats(2), ttl_seconds=3600)


class Parts:
    def __init__(self, url: str, read_url: str | None = None, pool_size: int = 4) -> None:
        self.cache = NearCache(1 << 24, 60.0)
        self.client = RedisClient(read_url or url, pool_size=pool_size, tracking=self.cache)
        state = RegistryState()
        state.catalog = Catalog(snapshot(STATS, HOURLY))
        self.reader = OnlineReader(state, self.client, ReadLimits(redis_timeout_s=5.0), self.cache)
        self.sync = redis.Redis.from_url(url)
        self.writer = OnlineWriter(self.sync)

    def write(self, entity: str, value: float, fv: object = STATS) -> None:
        self.writer.write(
            writable(fv), [[entity]], np.full((1, 2), value, np.float32), time.time_ns() // 1000
        )

    async def read(self, *entities: str, ref: str = "stats") -> ReadResult:
        return await self.reader.read([ref], [{"driver_id": e} for e in entities])

    async def synced_read(self, *entities: str) -> ReadResult:
        """A read after every change Redis acknowledged so far has reached the cache."""
        await self.client.sync(5.0)
        return await self.read(*entities)

    def mget_calls(self) -> int:
        stats = self.sync.info("commandstats").get("cmdstat_mget", {})
        return int(stats.get("calls", 0))


def _first(result: ReadResult, row: int = 0) -> tuple[float | None, int]:
    block = result.blocks[0]
    values = np.frombuffer(block.values, dtype=block.plan.out_dtype).reshape(result.row_count, -1)
    status = int(np.frombuffer(block.statuses, np.uint8).reshape(result.row_count, -1)[row, 0])
    return (float(values[row, 0]) if status != MISSING else None), status


@pytest.fixture
async def parts(own_redis: RedisServer) -> AsyncIterator[Parts]:
    p = Parts(own_redis.url)
    yield p
    await p.client.close()
    p.sync.close()


async def test_a_repeated_read_is_served_without_a_round_trip(parts: Parts) -> None:
    parts.write("1", 1.5)
    first = await parts.read("1", "2")
    calls = parts.mget_calls()
    second = await parts.read("1", "2")
    assert parts.mget_calls() == calls  # present and absent keys both came from the cache
    assert first.blocks[0].values == second.blocks[0].values
    assert _first(second) == (1.5, PRESENT)
    assert _first(second, 1) == (None, MISSING)
    stats = parts.cache.stats()
    assert (stats.hits, stats.misses) == (2, 2)  # each key once from Redis, once from memory
    await parts.read("3", "4")  # a lookup that misses every key counts each once
    assert parts.cache.stats().misses == 4


async def test_a_partial_hit_asks_redis_only_for_the_keys_it_lacks(parts: Parts) -> None:
    parts.write("1", 1.0)
    parts.write("2", 2.0)
    await parts.read("1")
    parts.sync.config_resetstat()
    result = await parts.read("1", "2")
    assert [_first(result, r)[0] for r in (0, 1)] == [1.0, 2.0]
    keys = parts.sync.info("commandstats")["cmdstat_mget"]
    assert keys["calls"] == 1
    assert parts.cache.stats().hits == 1  # entity 1 from memory, entity 2 fetched


async def test_every_change_is_seen_once_its_invalidation_arrived(parts: Parts) -> None:
    """A write, a delete, a creation and a flush that Redis acknowledged are all seen by a read made after
    ``sync`` (which waits for the invalidations Redis owes), never the value from before."""
    for i in range(200):
        parts.write("1", float(i))
        assert _first(await parts.synced_read("1")) == (float(i), PRESENT)
        assert _first(await parts.read("1")) == (float(i), PRESENT)  # cached
    key = online_key("driver", ["1"], "stats", 1)
    parts.sync.delete(key)
    assert _first(await parts.synced_read("1")) == (None, MISSING)
    assert _first(await parts.read("1")) == (None, MISSING)  # cached as absent
    parts.write("1", 7.0)
    assert _first(await parts.synced_read("1")) == (7.0, PRESENT)
    parts.sync.flushdb()
    assert _first(await parts.synced_read("1")) == (None, MISSING)
    assert parts.cache.stats().invalidations >= 200


async def test_a_swapdb_of_the_read_database_is_seen(own_redis: RedisServer, parts: Parts) -> None:
    """SWAPDB replaces the database a connection reads without a single invalidation (Redis tracks keys by
    name across databases, and its swap touches no key: it sends tracking clients nothing). The cache
    served the swapped-out values until its max age; the client now notices the swap (the SWAPDB count in
    ``INFO commandstats``, asked with each heartbeat and by ``sync``) and clears the cache."""
    other = redis.Redis.from_url(own_redis.url.removesuffix("/0") + "/1")
    # Database 1 is filled before database 0 is read: a write of a key of the same name after that read
    # would announce it (one namespace across databases) and hide the bug.
    OnlineWriter(other).write(
        writable(STATS), [["1"]], np.full((1, 2), 2.0, np.float32), time.time_ns() // 1000
    )
    parts.write("1", 1.0)
    assert _first(await parts.read("1")) == (1.0, PRESENT)
    assert _first(await parts.read("1")) == (1.0, PRESENT)  # from memory
    parts.sync.swapdb(0, 1)
    assert _first(await parts.synced_read("1")) == (2.0, PRESENT)
    parts.sync.swapdb(0, 1)  # and back: seen by the heartbeat alone, without a sync
    deadline = time.monotonic() + 5
    while _first(await parts.read("1")) != (1.0, PRESENT):
        assert time.monotonic() < deadline, "the value from before the swap was still served"
        await asyncio.sleep(0.05)
    other.close()


async def test_a_flushall_and_a_full_resync_are_seen(parts: Parts) -> None:
    """Redis announces these itself (an invalidation of no keys): FLUSHALL, and the flush a replica makes
    before it loads its primary's data (the read database turned into a replica: a failover's old
    primary)."""
    parts.write("1", 1.0)
    assert _first(await parts.read("1")) == (1.0, PRESENT)
    parts.sync.flushall()
    assert _first(await parts.synced_read("1")) == (None, MISSING)
    parts.write("1", 3.0)
    assert _first(await parts.synced_read("1")) == (3.0, PRESENT)
    primary = RedisServer(args=["--repl-diskless-sync-delay", "0"])
    primary.start()
    try:
        OnlineWriter(redis.Redis.from_url(primary.url)).write(
            writable(STATS), [["1"]], np.full((1, 2), 4.0, np.float32), time.time_ns() // 1000
        )
        parts.sync.replicaof("127.0.0.1", primary.port)
        deadline = time.monotonic() + 10
        while parts.sync.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not sync"
            await asyncio.sleep(0.05)
        assert _first(await parts.synced_read("1")) == (4.0, PRESENT)
    finally:
        parts.sync.replicaof("NO", "ONE")
        primary.close()


async def test_a_key_redis_expires_is_not_served_from_memory(parts: Parts) -> None:
    parts.write("1", 3.0)
    assert _first(await parts.read("1")) == (3.0, PRESENT)
    parts.sync.pexpire(online_key("driver", ["1"], "stats", 1), 50)
    deadline = time.monotonic() + 5
    while _first(await parts.read("1")) != (None, MISSING):  # Redis's active expiry announces it
        assert time.monotonic() < deadline, "the expired key was still served"
        await asyncio.sleep(0.05)


async def test_a_blob_past_its_write_time_plus_ttl_goes_back_to_redis(parts: Parts) -> None:
    """The bound that does not wait for Redis: a view's keys live at least TTL after their write, so a
    cached blob is served only until then (here the blob says it was written 3,600 s - 0.3 s ago)."""
    written_us = time.time_ns() // 1000 - 3_599_700_000
    parts.writer.write(writable(HOURLY), [["1"]], np.ones((1, 2), np.float32), written_us)
    # The writer stamps write_ts with its ingestion time (now); rewrite the header's write_ts field.
    key = online_key("driver", ["1"], "hourly", 1)
    blob = bytearray(parts.sync.get(key) or b"")
    blob[24:32] = written_us.to_bytes(8, "little", signed=True)
    parts.sync.set(key, bytes(blob))
    await parts.read("1", ref="hourly")
    calls = parts.mget_calls()
    await parts.read("1", ref="hourly")
    assert parts.mget_calls() == calls
    await asyncio.sleep(0.5)
    await parts.read("1", ref="hourly")
    assert parts.mget_calls() == calls + 1


async def test_a_redis_restart_empties_the_cache(own_redis: RedisServer, parts: Parts) -> None:
    parts.write("1", 5.0)
    assert _first(await parts.read("1")) == (5.0, PRESENT)
    own_redis.stop()
    own_redis.start()  # empty: no persistence
    parts.sync = redis.Redis.from_url(own_redis.url)
    deadline = time.monotonic() + 10
    while True:
        try:
            assert _first(await parts.read("1")) == (None, MISSING)
            break
        except Exception:  # UNAVAILABLE while the client notices and redials
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
    assert parts.cache.stats().entries == 1  # only the absent key read since the restart


async def test_a_user_not_allowed_tracking_reads_without_the_cache(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    admin = redis.Redis.from_url(own_redis.url)
    admin.acl_setuser("reader", enabled=True, passwords=["+pw"], keys=["*"], commands=["+mget", "+hello"])
    admin.set("k", "v")
    cache = NearCache(1 << 20, 60.0)
    client = RedisClient(f"redis://reader:pw@127.0.0.1:{own_redis.port}/0", tracking=cache)
    with caplog.at_level(logging.WARNING, logger="aether.data_plane.redis"):
        assert await client.mget([b"k"], 2.0, lambda reply: cache.store([b"k"], reply, [0], time.time())) == [
            b"v"
        ]
    assert not client.tracking and not client.quiet()
    assert cache.stats().entries == 0  # a reply that Redis will not announce changes of is not kept
    assert "refused client-side caching" in caplog.text
    await client.close()
    # Through the reader: plain reads, and no misses counted for a cache that is off.
    parts = Parts(own_redis.url, read_url=f"redis://reader:pw@127.0.0.1:{own_redis.port}/0")
    parts.write("1", 4.0)
    for _ in range(3):
        assert _first(await parts.read("1")) == (4.0, PRESENT)
    assert parts.client.tracking_refused
    # One miss: the first read, made before its dial learned that Redis refuses; none after.
    assert parts.cache.stats() == NearCacheStats(
        hits=0, misses=1, invalidations=0, evictions=0, entries=0, bytes=0
    )
    await parts.client.close()
    parts.sync.close()


async def test_a_user_not_allowed_info_keeps_the_cache_and_is_told_swaps_go_unseen(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    admin = redis.Redis.from_url(own_redis.url)
    admin.acl_setuser(
        "noinfo",
        enabled=True,
        passwords=["+pw"],
        keys=["*"],
        commands=["+mget", "+hello", "+client", "+ping"],
    )
    parts = Parts(own_redis.url, read_url=f"redis://noinfo:pw@127.0.0.1:{own_redis.port}/0")
    try:
        parts.write("1", 4.0)
        with caplog.at_level(logging.WARNING, logger="aether.data_plane.redis"):
            for _ in range(3):
                assert _first(await parts.read("1")) == (4.0, PRESENT)
        assert parts.client.tracking and parts.cache.stats().hits == 2
        assert caplog.text.count("cannot see a SWAPDB") == 1
        parts.write("1", 5.0)  # invalidations still arrive, and sync still waits for them
        assert _first(await parts.synced_read("1")) == (5.0, PRESENT)
    finally:
        await parts.client.close()
        parts.sync.close()
        admin.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("write"), st.sampled_from("123"), st.integers(0, 1000)),
            st.tuples(st.just("delete"), st.sampled_from("123"), st.just(0)),
            st.tuples(st.just("read"), st.sampled_from(["1", "2", "3", "12", "321"]), st.just(0)),
        ),
        max_size=25,
    )
)
def test_reads_match_a_model_of_the_writes(own_redis: RedisServer, ops: list[tuple[str, str, int]]) -> None:
    async def run() -> None:
        parts = Parts(own_redis.url)
        parts.sync.flushdb()
        model: dict[str, float] = {}
        try:
            for op, entities, value in ops:
                if op == "write":
                    parts.write(entities, float(value))
                    model[entities] = float(value)
                    await parts.client.sync(5.0)
                elif op == "delete":
                    parts.sync.delete(online_key("driver", [entities], "stats", 1))
                    model.pop(entities, None)
                    await parts.client.sync(5.0)
                else:
                    result = await parts.read(*entities)
                    got = [_first(result, row)[0] for row in range(len(entities))]
                    assert got == [model.get(e) for e in entities]
        finally:
            await parts.client.close()
            parts.sync.close()

    asyncio.run(run())


async def test_a_redis_gone_silent_stops_the_cache_from_answering(own_redis: RedisServer) -> None:
    """A partition that closes nothing: Redis's answers (invalidations included) stop arriving. Within
    about a second the cache stops answering (the heartbeat), so a value changed meanwhile is not served
    from memory: the read goes to Redis and fails UNAVAILABLE, as it would without the cache."""
    proxy = AnswerLosingProxy(f"127.0.0.1:{own_redis.port}")
    parts = Parts(own_redis.url, read_url=f"redis://{proxy.address}/0")
    try:
        parts.write("1", 1.0)
        await parts.read("1")
        assert _first(await parts.read("1")) == (1.0, PRESENT)
        assert parts.cache.stats().hits == 1
        proxy.hold_answers()
        parts.write("1", 2.0)  # acknowledged by Redis; its invalidation is lost on the way
        await asyncio.sleep(1.6)
        with pytest.raises(Unavailable):
            await parts.read("1")
        assert parts.cache.stats().hits == 1  # nothing more was served from memory
    finally:
        proxy.close()
        await parts.client.close()
        parts.sync.close()


def _pause_all(url: str, seconds: float) -> None:
    """Holds every client's commands on the redis-server for ``seconds`` (CLIENT PAUSE: a real stall)."""
    client = redis.Redis.from_url(url)
    client.execute_command("CLIENT", "PAUSE", str(int(seconds * 1000)), "ALL")  # type: ignore[no-untyped-call]
    client.close()


async def test_a_redis_stalled_for_two_seconds_fails_no_read_allowed_five(own_redis: RedisServer) -> None:
    """The heartbeat's ping must not fail the reads pipelined behind it before their own deadline (it
    had a 1 s timeout, so a 2 s stall failed a read allowed 5 s and cleared the cache)."""
    parts = Parts(own_redis.url, pool_size=1)  # one connection: the read queues behind the ping
    try:
        parts.write("1", 1.0)
        parts.write("2", 2.0)
        assert _first(await parts.read("1")) == (1.0, PRESENT)
        await asyncio.sleep(0.6)  # idle: the heartbeat pings
        await asyncio.to_thread(_pause_all, own_redis.url, 2.0)
        await asyncio.sleep(0.3)  # a ping is now waiting on the paused Redis
        started = time.monotonic()
        assert _first(await parts.read("2")) == (2.0, PRESENT)
        assert time.monotonic() - started < 4.5
        assert _first(await parts.read("1")) == (1.0, PRESENT)
        assert parts.cache.stats().entries == 2  # nothing was closed, nothing cleared
    finally:
        await parts.client.close()
        parts.sync.close()


async def test_a_burst_at_start_opens_no_more_connections_than_the_pool(own_redis: RedisServer) -> None:
    parts = Parts(own_redis.url, pool_size=4)
    try:
        parts.write("1", 1.0)
        results = await asyncio.gather(*(parts.read("1") for _ in range(200)))
        assert {_first(r) for r in results} == {(1.0, PRESENT)}
        clients = parts.sync.info("clients")["connected_clients"]
        assert clients <= 4 + 1  # the pool and this test's own client
    finally:
        await parts.client.close()
        parts.sync.close()


async def test_a_refusal_is_one_warning_however_many_connections_dial_at_once(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    admin = redis.Redis.from_url(own_redis.url)
    admin.acl_setuser("nocli", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-client"])
    admin.set("k", "v")
    client = RedisClient(
        f"redis://nocli:pw@127.0.0.1:{own_redis.port}/0", pool_size=4, tracking=NearCache(1 << 20, 60.0)
    )
    with caplog.at_level(logging.WARNING, logger="aether.data_plane.redis"):
        replies = await asyncio.gather(*(client.mget([b"k"], 2.0) for _ in range(8)))
    assert replies == [[b"v"]] * 8 and client.tracking_refused
    assert caplog.text.count("refused client-side caching") == 1
    await client.close()
    admin.close()
