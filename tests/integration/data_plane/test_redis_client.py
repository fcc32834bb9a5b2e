"""The read path's own Redis client against a redis-server we stop, restart and stall."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import redis

from data_plane.redis_client import RedisClient
from data_plane.redis_errors import RedisCommandError, RedisMisconfigured, RedisUnavailable
from tests.support.redis_server import RedisServer, cluster_node

pytestmark = pytest.mark.integration


def _stall(url: str, seconds: float) -> None:
    """Holds every client's commands on the redis-server for ``seconds`` (CLIENT PAUSE: a real stall)."""
    client = redis.Redis.from_url(url)
    client.execute_command(  # type: ignore[no-untyped-call]
        "CLIENT", "PAUSE", str(int(seconds * 1000)), "ALL"
    )
    client.close()


async def test_mget_pipelined_replies_reach_their_callers(own_redis: RedisServer) -> None:
    redis.Redis.from_url(own_redis.url).mset({f"k{i}": f"v{i}" for i in range(50)})
    client = RedisClient(own_redis.url, pool_size=2)
    replies = await asyncio.gather(*(client.mget([f"k{i}".encode(), b"absent"], 1.0) for i in range(50)))
    await client.close()
    assert replies == [[f"v{i}".encode(), None] for i in range(50)]


async def test_error_reply_is_a_command_error_and_the_connection_stays_usable(own_redis: RedisServer) -> None:
    client = RedisClient(own_redis.url, pool_size=1)
    with pytest.raises(RedisCommandError, match="wrong number of arguments"):
        await client.execute(b"GET", timeout_s=1.0)
    assert await client.execute(b"PING", timeout_s=1.0) == b"PONG"
    await client.close()


async def test_a_stalled_redis_times_out_within_budget_then_reads_resume(own_redis: RedisServer) -> None:
    client = RedisClient(own_redis.url)
    await client.execute(b"SET", b"k", b"v", timeout_s=1.0)
    _stall(own_redis.url, 1.0)
    started = time.monotonic()
    with pytest.raises(RedisUnavailable, match="did not answer within 200 ms"):
        await client.mget([b"k"], 0.2)
    assert time.monotonic() - started < 0.5
    await asyncio.sleep(1.0)
    assert await client.mget([b"k"], 1.0) == [b"v"]
    await client.close()


async def test_redis_down_fails_fast_and_reads_recover_when_it_returns(own_redis: RedisServer) -> None:
    client = RedisClient(own_redis.url)
    await client.execute(b"PING", timeout_s=1.0)
    own_redis.stop()
    for _ in range(3):  # the pooled connection is gone, and so is every new dial
        started = time.monotonic()
        with pytest.raises(RedisUnavailable):
            await client.mget([b"k"], 0.5)
        assert time.monotonic() - started < 0.5
    own_redis.start()
    redis.Redis.from_url(own_redis.url).set("k", "back")
    assert await client.mget([b"k"], 1.0) == [b"back"]
    await client.close()


async def test_selects_the_database_of_the_url(own_redis: RedisServer) -> None:
    redis.Redis(port=own_redis.port, db=3).set("k", "three")
    client = RedisClient(f"redis://127.0.0.1:{own_redis.port}/3")
    assert await client.mget([b"k"], 1.0) == [b"three"]
    await client.close()


async def test_reads_the_database_the_writers_write_for_a_db_query(own_redis: RedisServer) -> None:
    # The writers open AETHER_REDIS_URL with redis-py, which takes ?db=3 over the path; the data plane
    # read database 0 and answered every key as missing.
    url = f"redis://127.0.0.1:{own_redis.port}/0?db=3"
    redis.Redis.from_url(url).set("k", "three")
    assert redis.Redis(port=own_redis.port, db=3).get("k") == b"three"
    client = RedisClient(url)
    assert await client.mget([b"k"], 1.0) == [b"three"]
    await client.close()


async def test_commands_of_one_loop_turn_leave_in_one_write(own_redis: RedisServer) -> None:
    """Under concurrency the client corks: 50 MGETs issued in the same turn reach Redis in a handful of
    reads, not 50 (Redis counts the read events it processes)."""
    sync = redis.Redis.from_url(own_redis.url)
    sync.mset({f"k{i}": f"v{i}" for i in range(50)})
    client = RedisClient(own_redis.url, pool_size=1)
    assert await client.execute(b"PING", timeout_s=1.0) == b"PONG"  # dialled before counting
    before = int(sync.info("stats")["total_reads_processed"])
    replies = await asyncio.gather(*(client.mget([f"k{i}".encode()], 1.0) for i in range(50)))
    after = int(sync.info("stats")["total_reads_processed"])
    await client.close()
    assert replies == [[f"v{i}".encode()] for i in range(50)]
    assert after - before <= 5  # one INFO call of our own included


async def test_a_cancelled_caller_never_shifts_replies_onto_the_next(own_redis: RedisServer) -> None:
    """The reply to a command whose caller was cancelled still arrives, and is dropped in its place:
    the callers pipelined behind it on the same connection get their own replies."""
    redis.Redis.from_url(own_redis.url).mset({"k1": "v1", "k2": "v2", "k3": "v3"})
    client = RedisClient(own_redis.url, pool_size=1)
    assert await client.execute(b"PING", timeout_s=1.0) == b"PONG"  # one connection, dialled
    first = asyncio.ensure_future(client.mget([b"k1"], 1.0))
    second = asyncio.ensure_future(client.mget([b"k2"], 1.0))
    first.cancel()
    assert await second == [b"v2"]
    assert await client.mget([b"k3"], 1.0) == [b"v3"]
    assert first.cancelled()
    await client.close()


async def test_a_command_due_sooner_fails_at_its_own_deadline_behind_a_later_one(
    own_redis: RedisServer,
) -> None:
    """One deadline timer per connection: a command with a short budget queued behind one with a long
    budget must still fail at its own deadline, not the earlier command's."""
    client = RedisClient(own_redis.url, pool_size=1)
    assert await client.execute(b"PING", timeout_s=1.0) == b"PONG"
    _stall(own_redis.url, 1.5)
    started = time.monotonic()
    slow = asyncio.ensure_future(client.mget([b"k"], 5.0))
    with pytest.raises(RedisUnavailable, match="did not answer within 200 ms"):
        await client.mget([b"k"], 0.2)
    assert time.monotonic() - started < 0.6
    with pytest.raises(RedisUnavailable):  # the connection's state is unknown: it closed under both
        await slow
    await asyncio.sleep(1.5)
    assert await client.mget([b"k"], 1.0) == [None]
    await client.close()


async def test_a_short_deadline_fails_its_own_read_and_not_those_pipelined_beside_it(
    own_redis: RedisServer,
) -> None:
    """A read's budget is its caller's gRPC deadline. One caller's 50 ms deadline passing during a 300 ms
    stall closed the connection, failing the read beside it that was allowed a second (UNAVAILABLE) and,
    with tracking, clearing the near cache. Only a Redis silent past the hung limit closes it now."""
    redis.Redis.from_url(own_redis.url).set("k", "v")
    client = RedisClient(own_redis.url, pool_size=1, hung_after_s=1.0)
    assert await client.execute(b"PING", timeout_s=1.0) == b"PONG"
    connection = client._connections[0]
    _stall(own_redis.url, 0.3)
    patient = asyncio.ensure_future(client.mget([b"k"], 2.0))
    with pytest.raises(RedisUnavailable, match="did not answer within 50 ms"):
        await client.mget([b"k"], 0.05)
    assert await patient == [b"v"]  # answered once the stall ended, on the same connection
    assert client._connections == [connection] and connection.is_open
    assert await client.mget([b"k"], 1.0) == [b"v"]  # the late reply was dropped, not handed on
    await client.close()


async def test_a_redis_silent_past_the_hung_limit_closes_the_connection(own_redis: RedisServer) -> None:
    client = RedisClient(own_redis.url, pool_size=1, hung_after_s=0.2)
    assert await client.execute(b"PING", timeout_s=1.0) == b"PONG"
    _stall(own_redis.url, 0.8)
    patient = asyncio.ensure_future(client.mget([b"k"], 5.0))
    started = time.monotonic()
    with pytest.raises(RedisUnavailable, match="did not answer within 50 ms"):
        await client.mget([b"k"], 0.05)
    with pytest.raises(RedisUnavailable, match="did not answer within 200 ms"):  # closed at the hung limit
        await patient
    assert time.monotonic() - started < 0.7
    await asyncio.sleep(0.8)
    assert await client.mget([b"k"], 1.0) == [None]
    await client.close()


async def test_a_redis_loading_its_dataset_after_a_restart_is_busy_then_serves(tmp_path: object) -> None:
    """LOADING (a restarted Redis reading its dump) is a RedisUnavailable (RedisBusy), which callers
    retry; it was a RedisCommandError, which the read path answered INTERNAL."""
    # Slowed per key so that loading lasts about a second, as a big dataset's does.
    server = RedisServer(args=["--key-load-delay", "200", "--loading-process-events-interval-bytes", "1024"])
    server.start()
    sync = redis.Redis.from_url(server.url)
    sync.mset({f"filler{i}": "x" * 10 for i in range(5000)})
    sync.set("k", "v")
    sync.save()
    sync.close()
    server.stop()
    restart = threading.Thread(target=server.start)  # returns once loaded
    restart.start()
    client = RedisClient(server.url)
    seen: RedisUnavailable | None = None
    deadline = time.monotonic() + 10
    while seen is None and time.monotonic() < deadline:
        try:
            await client.mget([b"k"], 1.0)
        except RedisUnavailable as exc:
            if str(exc).startswith("LOADING"):
                seen = exc
            else:  # not listening yet
                await asyncio.sleep(0.01)
    restart.join()
    try:
        assert seen is not None
        assert await client.mget([b"k"], 1.0) == [b"v"]
    finally:
        await client.close()
        server.close()


async def test_a_redis_cluster_node_is_refused_when_dialled_naming_the_url() -> None:
    """Reads of several entities span hash slots (CROSSSLOT), which the single-endpoint client cannot
    route: a cluster node is refused on its first connection, not read from until a read fails INTERNAL."""
    server = cluster_node()
    server.start()
    client = RedisClient(server.url)
    try:
        with pytest.raises(RedisMisconfigured) as refused:
            await client.connect(2.0)
        assert str(refused.value).startswith(
            f"the online store at {server.url} is a Redis Cluster node; the data plane reads from a single"
            " Redis (primary) endpoint"
        )
        with pytest.raises(RedisMisconfigured):  # and so is every read
            await client.mget([b"ae:{driver:1}:stats:v1", b"ae:{driver:2}:stats:v1"], 2.0)
    finally:
        await client.close()
        server.close()


async def test_a_user_not_allowed_info_still_connects_and_reads(own_redis: RedisServer) -> None:
    """The cluster check asks INFO; a least-privilege ACL user may not run it, and must still be served."""
    admin = redis.Redis.from_url(own_redis.url)
    admin.acl_setuser("reader", enabled=True, passwords=["+pw"], keys=["*"], commands=["+mget"])
    admin.set("k", "v")
    client = RedisClient(f"redis://reader:pw@127.0.0.1:{own_redis.port}/0")
    assert await client.mget([b"k"], 2.0) == [b"v"]
    await client.close()
