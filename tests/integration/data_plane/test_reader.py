"""The online read path against a real redis-server: statuses, TTL, fingerprints, pinned versions, the
one-round-trip rule and the request limits."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest
import redis

from clients.aether.v1 import feature_registry_pb2 as fr
from clients.aether.v1 import online_features_pb2 as pb
from clients.errors import (
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from control_plane.features.online_writer import EXPIRY_TTL_FACTOR, OnlineWriter
from data_plane.catalog import Catalog, RegistryState
from data_plane.reader import MISSING, PRESENT, STALE, OnlineReader, ReadLimits, ReadResult
from data_plane.redis_client import RedisClient
from kernels.online_keys import online_key
from kernels.packed_blob import encode, layout_dtype
from tests.support.redis_server import RedisServer
from tests.unit.data_plane.registry_builders import entity, floats, snapshot, view, writable

pytestmark = pytest.mark.integration

NOW_US = time.time_ns() // 1000
HOUR_US = 3_600_000_000
MIXED = [("trips", "int64"), ("rating", "float32"), ("active", "bool")]


def _matrix(result: ReadResult, block: int) -> np.ndarray:
    b = result.blocks[block]
    return np.frombuffer(b.values, dtype=b.plan.out_dtype).reshape(result.row_count, -1)


def _statuses(result: ReadResult, block: int) -> np.ndarray:
    b = result.blocks[block]
    return np.frombuffer(b.statuses, dtype=np.uint8).reshape(result.row_count, b.plan.column_count)


def _timestamps(result: ReadResult, block: int) -> list[int]:
    return [int(t) for t in np.frombuffer(result.blocks[block].event_timestamps_us, dtype="<i8")]


@pytest.fixture
def sync_redis(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


@pytest.fixture
async def reader_parts(redis_url: str) -> AsyncIterator[tuple[RegistryState, OnlineReader]]:
    state = RegistryState()
    client = RedisClient(redis_url)
    # A generous Redis cap: these tests are about statuses, and a busy shared CI machine can take longer
    # than the production default (0.5 s) to dial (outages are tested in test_redis_client.py).
    limits = ReadLimits(max_rows=5, max_features=50, redis_timeout_s=5.0)
    yield state, OnlineReader(state, client, limits)
    await client.close()


def _install(state: RegistryState, *views: fr.FeatureView) -> Catalog:
    state.catalog = Catalog(snapshot(*views))
    return state.catalog


async def test_present_missing_stale_and_null_statuses(
    reader_parts: tuple[RegistryState, OnlineReader], sync_redis: redis.Redis
) -> None:
    state, reader = reader_parts
    stats = view("stats", floats(4), ttl_seconds=3600)
    _install(state, stats)
    writer = OnlineWriter(sync_redis)
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    nulls = np.zeros((3, 4), dtype=bool)
    nulls[2, 1] = True
    event_ts = [NOW_US, NOW_US - 2 * HOUR_US, NOW_US - 2 * HOUR_US]
    writer.write(writable(stats), [["1"], ["2"], ["3"]], values, event_ts, nulls=nulls)

    rows = [{"driver_id": i} for i in ("1", "2", "3", "4")]
    result = await reader.read(["stats"], rows)
    assert result.row_count == 4
    statuses = _statuses(result, 0)
    assert statuses[0].tolist() == [PRESENT] * 4
    assert statuses[1].tolist() == [STALE] * 4  # older than the 1 h TTL, still returned
    assert statuses[2].tolist() == [STALE, MISSING, STALE, STALE]  # a null is missing whatever its age
    assert statuses[3].tolist() == [MISSING] * 4  # no key at all
    matrix = _matrix(result, 0)
    assert matrix[:2].tolist() == values[:2].tolist()
    assert matrix[2].tolist() == [8, 0, 10, 11]  # the null value reads as zero
    assert matrix[3].tolist() == [0, 0, 0, 0]
    assert _timestamps(result, 0) == [*event_ts, 0]

    subset = await reader.read(["stats:f3", "stats:f1"], rows[1:3])
    assert _matrix(subset, 0).tolist() == [[7, 5], [11, 0]]
    assert _statuses(subset, 0).tolist() == [[STALE, STALE], [STALE, MISSING]]


async def test_ttl_zero_never_stale_and_keys_expire_after_twice_the_ttl(
    reader_parts: tuple[RegistryState, OnlineReader], sync_redis: redis.Redis
) -> None:
    state, reader = reader_parts
    forever = view("forever", floats(2))
    hourly = view("hourly", floats(2), ttl_seconds=3600)
    _install(state, forever, hourly)
    writer = OnlineWriter(sync_redis)
    ancient = NOW_US - 1000 * 24 * HOUR_US
    writer.write(writable(forever), [["1"]], np.ones((1, 2), np.float32), ancient)
    writer.write(writable(hourly), [["1"]], np.ones((1, 2), np.float32), NOW_US)
    result = await reader.read(["forever", "hourly"], [{"driver_id": "1"}])
    assert _statuses(result, 0).tolist() == [[PRESENT, PRESENT]]
    assert _statuses(result, 1).tolist() == [[PRESENT, PRESENT]]
    assert sync_redis.pttl(online_key("driver", ["1"], "forever", 1)) == -1  # no expiry
    pttl = sync_redis.pttl(online_key("driver", ["1"], "hourly", 1))
    assert 3600_000 * EXPIRY_TTL_FACTOR - 60_000 < pttl <= 3600_000 * EXPIRY_TTL_FACTOR


async def test_mixed_views_whole_and_subsets(
    reader_parts: tuple[RegistryState, OnlineReader], sync_redis: redis.Redis
) -> None:
    state, reader = reader_parts
    mixed = view("mixed", MIXED)
    _install(state, mixed)
    records = np.array([(5, 4.5, True), (9, 1.25, False)], dtype=layout_dtype(["int64", "float32", "bool"]))
    OnlineWriter(sync_redis).write(writable(mixed), [["1"], ["2"]], records, NOW_US)
    rows = [{"driver_id": "2"}, {"driver_id": "1"}]
    whole = await reader.read(["mixed"], rows)
    got = np.frombuffer(whole.blocks[0].values, dtype=whole.blocks[0].plan.out_dtype)
    assert got.tolist() == [(9, 1.25, False), (5, 4.5, True)]
    pair = await reader.read(["mixed:active", "mixed:trips"], rows)
    got = np.frombuffer(pair.blocks[0].values, dtype=pair.blocks[0].plan.out_dtype)
    assert pair.blocks[0].plan.out_dtype.itemsize == 9  # packed: bool + int64, no padding
    assert got.tolist() == [(False, 9), (True, 5)]
    single = await reader.read(["mixed:rating"], rows)
    assert np.frombuffer(single.blocks[0].values, dtype="<f4").tolist() == [1.25, 4.5]

    nulls = np.array([[False, True, False], [False, False, False]])
    OnlineWriter(sync_redis).write(writable(mixed), [["1"], ["2"]], records, NOW_US, nulls=nulls)
    whole = await reader.read(["mixed"], rows)
    got = np.frombuffer(whole.blocks[0].values, dtype=whole.blocks[0].plan.out_dtype)
    assert got.tolist() == [(9, 1.25, False), (5, 0.0, True)]  # the null rating reads as zero
    assert _statuses(whole, 0).tolist() == [[PRESENT] * 3, [PRESENT, MISSING, PRESENT]]


async def test_pinned_old_version_is_read_side_by_side_with_the_new(
    reader_parts: tuple[RegistryState, OnlineReader], sync_redis: redis.Redis
) -> None:
    state, reader = reader_parts
    v1 = view("stats", floats(2), version=1)
    v2 = view("stats", [("f0", "float32"), ("f1", "float64"), ("f2", "float64")], version=2)
    _install(state, v1, v2)
    writer = OnlineWriter(sync_redis)
    writer.write(writable(v1), [["1"]], np.array([[1, 2]], np.float32), NOW_US)
    writer.write(writable(v2), [["1"]], np.array([(10, 20, 30)], dtype=writable(v2).layout), NOW_US)
    result = await reader.read(["stats:f1", "stats@1:f1"], [{"driver_id": "1"}])
    assert [(b.plan.view.name, b.plan.view.version) for b in result.blocks] == [("stats", 2), ("stats", 1)]
    assert np.frombuffer(result.blocks[0].values, "<f8").tolist() == [20.0]
    assert np.frombuffer(result.blocks[1].values, "<f4").tolist() == [2.0]


async def test_fingerprint_mismatch_and_corrupt_blob_are_data_loss_naming_the_key(
    reader_parts: tuple[RegistryState, OnlineReader], sync_redis: redis.Redis
) -> None:
    state, reader = reader_parts
    stats = view("stats", floats(2))
    _install(state, stats)
    key = online_key("driver", ["1"], "stats", 1)
    sync_redis.set(key, encode(np.ones(2, np.float32), np.dtype("<f4"), stats.schema_fingerprint ^ 1, 0, 0))
    with pytest.raises(DataLoss, match=r"ae:\{driver:1\}:stats:v1.*fingerprint"):
        await reader.read(["stats"], [{"driver_id": "1"}])
    sync_redis.set(key, b"garbage")
    with pytest.raises(DataLoss, match=r"ae:\{driver:1\}:stats:v1"):
        await reader.read(["stats"], [{"driver_id": "1"}])


@pytest.mark.parametrize("rows", [1, 2, 4])
async def test_a_blob_with_fewer_values_than_the_schema_is_data_loss_not_a_shifted_row(
    reader_parts: tuple[RegistryState, OnlineReader], sync_redis: redis.Redis, rows: int
) -> None:
    # Right fingerprint, wrong count (a damaged or foreign write): the header's count must be checked
    # against the schema's, or the values of the rows after it are read out of place (with 4 rows the
    # lengths add up to whole rows of the view, so nothing else would notice).
    state, reader = reader_parts
    stats = view("stats", floats(3))
    _install(state, stats)
    good = encode(np.ones(3, np.float32), np.dtype("<f4"), stats.schema_fingerprint, NOW_US, 0)
    short = encode(np.full(2, 7, np.float32), np.dtype("<f4"), stats.schema_fingerprint, NOW_US, 0)
    for driver in range(1, rows + 1):
        sync_redis.set(online_key("driver", [str(driver)], "stats", 1), short if driver == 1 else good)
    with pytest.raises(DataLoss, match=r"ae:\{driver:1\}:stats:v1.*holds 2 values, the schema has 3"):
        await reader.read(["stats"], [{"driver_id": str(d)} for d in range(1, rows + 1)])


async def test_ten_views_of_a_hundred_features_cost_exactly_one_mget(
    redis_url: str, sync_redis: redis.Redis
) -> None:
    views = [view(f"view{i}", floats(100)) for i in range(10)]
    state = RegistryState()
    state.catalog = Catalog(snapshot(*views))
    writer = OnlineWriter(sync_redis)
    for i, fv in enumerate(views):
        writer.write(writable(fv), [["7"]], np.full((1, 100), i, np.float32), NOW_US)
    client = RedisClient(redis_url)
    reader = OnlineReader(state, client, ReadLimits())
    await client.execute(b"PING", timeout_s=1.0)  # connect first: the handshake is not the read
    sync_redis.config_resetstat()
    result = await reader.read([f"view{i}" for i in range(10)], [{"driver_id": "7"}])
    stats = sync_redis.info("commandstats")
    await client.close()
    assert sum(b.plan.column_count for b in result.blocks) == 1000
    assert [int(_matrix(result, i)[0, 0]) for i in range(10)] == list(range(10))
    reads = {
        name: s["calls"]
        for name, s in stats.items()
        if name not in ("cmdstat_info", "cmdstat_config|resetstat")
    }
    assert reads == {"cmdstat_mget": 1}


async def test_a_deadline_already_passed_is_deadline_exceeded_not_an_unavailable_store(
    reader_parts: tuple[RegistryState, OnlineReader], sync_redis: redis.Redis
) -> None:
    # With Redis healthy, "no time left to ask Redis" was answered UNAVAILABLE "online store unavailable".
    state, reader = reader_parts
    _install(state, view("stats", floats(2)))
    for remaining in (0.0, -0.5):
        with pytest.raises(DeadlineExceeded, match="deadline passed before the online features were read"):
            await reader.read(["stats"], [{"driver_id": "1"}], remaining)
    assert (await reader.read(["stats"], [{"driver_id": "1"}], 5.0)).row_count == 1


async def test_limits_are_resource_exhausted_stating_the_limit(
    reader_parts: tuple[RegistryState, OnlineReader],
) -> None:
    state, reader = reader_parts
    _install(state, view("wide", floats(60)), view("narrow", floats(2)))
    with pytest.raises(ResourceExhausted, match="limit is 5"):
        await reader.read(["narrow"], [{"driver_id": str(i)} for i in range(6)])
    with pytest.raises(ResourceExhausted, match="limit is 50"):
        await reader.read(["wide"], [{"driver_id": "1"}])


async def test_no_snapshot_yet_is_unavailable(reader_parts: tuple[RegistryState, OnlineReader]) -> None:
    _, reader = reader_parts
    with pytest.raises(Unavailable, match="no feature registry snapshot yet"):
        await reader.read(["stats"], [{"driver_id": "1"}])


async def test_no_rows_needs_no_redis_call(reader_parts: tuple[RegistryState, OnlineReader]) -> None:
    state, reader = reader_parts
    _install(state, view("stats", floats(3)))
    result = await reader.read(["stats"], [])
    assert result.row_count == 0 and result.blocks[0].values == b""


def _run_until_killed(url: str) -> None:
    """A script that keeps Redis busy until SCRIPT KILL (its caller then gets an error reply)."""
    with contextlib.suppress(redis.ResponseError):
        redis.Redis.from_url(url).eval("while true do end", 0)


def _kill_script(url: str) -> None:
    with contextlib.suppress(redis.ResponseError):  # NOTBUSY: none is running
        redis.Redis.from_url(url).script_kill()


async def test_a_redis_busy_with_a_script_is_unavailable_and_reads_resume() -> None:
    """An error reply that means "not now" (BUSY here; LOADING after a restart, MASTERDOWN, TRYAGAIN...)
    is UNAVAILABLE, which clients retry; it was INTERNAL "online store refused MGET"."""
    server = RedisServer(args=["--busy-reply-threshold", "20"])
    server.start()
    client = RedisClient(server.url)
    state = RegistryState()
    reader = OnlineReader(state, client, ReadLimits(redis_timeout_s=5.0))
    _install(state, view("stats", floats(2)))
    script = threading.Thread(target=_run_until_killed, args=(server.url,), daemon=True)
    try:
        assert (await reader.read(["stats"], [{"driver_id": "1"}])).row_count == 1  # dialled
        script.start()
        await asyncio.sleep(0.2)  # past the busy threshold
        with pytest.raises(Unavailable, match=r"online store unavailable: BUSY .*127\.0\.0\.1"):
            await reader.read(["stats"], [{"driver_id": "1"}])
        _kill_script(server.url)
        script.join(5)
        assert (await reader.read(["stats"], [{"driver_id": "1"}])).row_count == 1
    finally:
        _kill_script(server.url)  # else the server cannot stop
        await client.close()
        server.close()


async def test_missing_or_wrong_redis_password_is_failed_precondition_naming_the_url() -> None:
    """NOAUTH and WRONGPASS were INTERNAL; they are a setting to fix, named without the password."""
    server = RedisServer(args=["--requirepass", "s3cret"], password="s3cret")
    server.start()
    state = RegistryState()
    _install(state, view("stats", floats(2)))
    try:
        for url, reply in (
            (f"redis://127.0.0.1:{server.port}/0", "NOAUTH"),
            (f"redis://:wrong-secret@127.0.0.1:{server.port}/0", "WRONGPASS"),
        ):
            client = RedisClient(url)
            reader = OnlineReader(state, client, ReadLimits(redis_timeout_s=5.0))
            with pytest.raises(FailedPrecondition) as caught:
                await reader.read(["stats"], [{"driver_id": "1"}])
            await client.close()
            message = str(caught.value)
            assert f"the online store at redis://127.0.0.1:{server.port}/0 refused the data plane" in message
            assert reply in message and "set the password in AETHER_REDIS_URL" in message
            assert "wrong-secret" not in message
        client = RedisClient(f"redis://:s3cret@127.0.0.1:{server.port}/0")
        reader = OnlineReader(state, client, ReadLimits(redis_timeout_s=5.0))
        assert (await reader.read(["stats"], [{"driver_id": "1"}])).row_count == 1
        await client.close()
    finally:
        server.close()


USERS = view("profile", floats(2), entity="user")
USER = entity("user", keys=(("user_id", "string"),))


async def test_a_join_key_longer_than_the_limit_is_refused_naming_it_and_never_sent_to_redis(
    reader_parts: tuple[RegistryState, OnlineReader], sync_redis: redis.Redis
) -> None:
    # Ingestion quarantines a string join key of more than 1,024 bytes of UTF-8 (AETHER_MAX_JOIN_KEY_BYTES),
    # so no such key is stored: a read of one went to Redis anyway, a 5 MB key in a 5 MB MGET.
    state, reader = reader_parts
    state.catalog = Catalog(snapshot(USERS, entities=[USER]))
    at_limit = "é" * 512  # 1,024 bytes: as long as ingestion takes
    OnlineWriter(sync_redis).write(writable(USERS), [[at_limit]], np.ones((1, 2), np.float32), NOW_US)
    assert _statuses(await reader.read(["profile"], [{"user_id": at_limit}]), 0).tolist() == [[PRESENT] * 2]
    sync_redis.config_resetstat()
    for key, size in (("é" * 513, "1,026"), ("x" * 1025, "1,025"), ("k" * 5 * 2**20, "5,242,880")):
        rows = [{"user_id": "1"}, {"user_id": key}]
        with pytest.raises(InvalidArgument) as caught:
            await reader.read(["profile"], rows)
        message = str(caught.value)
        assert message.startswith(f"row 1: join key 'user_id' = {key[:20]!r}... ({len(key):,} characters)")
        assert f"is {size} bytes of UTF-8, longer than the limit of 1,024 bytes" in message
        assert "AETHER_MAX_JOIN_KEY_BYTES" in message and len(message) < 300
    assert "cmdstat_mget" not in sync_redis.info("commandstats")


async def test_the_join_key_limit_is_the_readers_own_when_the_snapshot_names_none(redis_url: str) -> None:
    """A snapshot of an older control plane says no limit (0): the data plane's own setting applies."""
    state = RegistryState()
    state.catalog = Catalog(snapshot(USERS, entities=[USER]))
    client = RedisClient(redis_url)
    reader = OnlineReader(state, client, ReadLimits(redis_timeout_s=5.0, max_join_key_bytes=8))
    try:
        assert (await reader.read(["profile"], [{"user_id": "12345678"}])).row_count == 1
        with pytest.raises(InvalidArgument, match=r"'123456789' is 9 bytes of UTF-8, .* limit of 8 bytes"):
            await reader.read(["profile"], [{"user_id": "123456789"}])
        with pytest.raises(InvalidArgument, match=r"'ééééé' is 10 bytes of UTF-8"):  # 5 characters
            await reader.read(["profile"], [{"user_id": "ééééé"}])
    finally:
        await client.close()


async def test_the_control_planes_join_key_limit_in_the_snapshot_comes_before_the_readers_own(
    redis_url: str,
) -> None:
    """Ingestion stores keys up to the control plane's limit, whatever this process's setting says: the
    snapshot's limit is the one reads refuse by (``read`` as Predict uses it, ``read_wire`` as
    GetOnlineFeatures does), and a new snapshot's takes over with its catalog."""
    state = RegistryState()
    said = snapshot(USERS, entities=[USER])
    said.max_join_key_bytes = 12
    state.catalog = Catalog(said)
    client = RedisClient(redis_url)
    reader = OnlineReader(state, client, ReadLimits(redis_timeout_s=5.0, max_join_key_bytes=8))
    wire = pb.GetOnlineFeaturesRequest(features=["profile"]).SerializeToString()
    try:
        assert (await reader.read(["profile"], [{"user_id": "x" * 12}])).row_count == 1
        assert (await reader.read_wire(wire, 1, [{"user_id": "x" * 12}])).row_count == 1
        for read in (
            reader.read(["profile"], [{"user_id": "x" * 13}]),
            reader.read_wire(wire, 1, [{"user_id": "x" * 13}]),
        ):
            with pytest.raises(InvalidArgument) as caught:
                await read
            assert str(caught.value) == (
                "row 0: join key 'user_id' = 'xxxxxxxxxxxxx' is 13 bytes of UTF-8, longer than the limit"
                " of 12 bytes for a join key (the control plane's AETHER_MAX_JOIN_KEY_BYTES); no key that"
                " long can have been ingested"
            )
        said.max_join_key_bytes = 20  # a control plane restarted with a higher limit
        said.revision += 1
        state.catalog = Catalog(said)
        assert (await reader.read(["profile"], [{"user_id": "x" * 20}])).row_count == 1
        said.max_join_key_bytes = 0  # and one of an older version
        state.catalog = Catalog(said)
        with pytest.raises(InvalidArgument, match=r"limit of 8 bytes .*\(this data plane's AETHER_MAX_JOIN"):
            await reader.read(["profile"], [{"user_id": "x" * 9}])
    finally:
        await client.close()
