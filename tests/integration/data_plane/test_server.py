"""The data plane over gRPC: a real server started from its persisted registry snapshot (no control plane
reachable), a real redis-server, the SDK, health, reflection, and every fault status."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import numpy as np
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from clients.aether.v1 import online_features_pb2 as pb
from clients.aether.v1 import online_features_pb2_grpc as pb_grpc
from clients.errors import InvalidArgument
from clients.sdk.online import MISSING, PRESENT, OnlineFeaturesClient
from control_plane.features.online_writer import OnlineWriter
from data_plane.api.online_features import OnlineFeaturesServicer, add_to_server
from data_plane.catalog import Catalog, RegistryState
from data_plane.reader import OnlineReader, ReadLimits
from data_plane.redis_client import RedisClient
from data_plane.registry_watch import save_snapshot
from data_plane.server import DataPlaneHandle, start_server
from data_plane.settings import DataPlaneSettings
from tests.support.grpc_core import pending_registered_method_requests
from tests.support.ports import refused_address
from tests.support.redis_server import RedisServer
from tests.unit.data_plane.registry_builders import entity, floats, snapshot, view, writable

pytestmark = pytest.mark.integration

STATS = view("stats", floats(3), ttl_seconds=3600)
STATS_V2 = view("stats", [("f0", "float32"), ("trips", "int64")], version=2)
NOW_US = time.time_ns() // 1000


def _settings(redis_url: str, snapshot_path: Path) -> DataPlaneSettings:
    return DataPlaneSettings(
        near_cache_mb=0.0,  # see tests/conftest.py
        listen="127.0.0.1:0",
        redis_url=redis_url,
        control_plane_addr=refused_address(),  # nothing listens there
        snapshot_path=snapshot_path,
        max_rows_per_request=10,
        redis_timeout_s=0.3,
    )


@pytest.fixture
async def data_plane(own_redis: RedisServer, tmp_path: Path) -> AsyncIterator[DataPlaneHandle]:
    path = tmp_path / "registry_snapshot.pb"
    save_snapshot(path, snapshot(STATS, STATS_V2, revision=7).SerializeToString())
    writer = OnlineWriter(redis.Redis.from_url(own_redis.url))
    writer.write(writable(STATS), [["1"], ["2"]], np.array([[1, 2, 3], [4, 5, 6]], np.float32), NOW_US)
    handle = await start_server(_settings(own_redis.url, path))
    # The overall health turns SERVING once the plans are known (here: the unreachable control plane's
    # watch has failed), a moment after the start returns.
    await asyncio.wait_for(handle.serving.wait(), 10)
    yield handle
    await handle.stop(None)


async def _call(
    port: int, features: list[str], rows: list[dict[str, str]], deadline_s: float = 2.0
) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.OnlineFeaturesStub(channel)  # type: ignore[no-untyped-call]
        request = pb.GetOnlineFeaturesRequest(features=features, rows=[pb.EntityRow(keys=r) for r in rows])
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetOnlineFeatures(request, timeout=deadline_s)
        return info.value


async def test_serves_from_the_persisted_snapshot_while_no_control_plane_is_reachable(
    data_plane: DataPlaneHandle,
) -> None:
    assert data_plane.registry.require().revision == 7
    with OnlineFeaturesClient(f"127.0.0.1:{data_plane.port}") as client:
        got = await asyncio.to_thread(
            client.get_online_features, ["stats@1", "stats:trips"], [{"driver_id": "2"}, {"driver_id": 9}]
        )
    assert got.row_count == 2
    v1 = got.block("stats", 1)
    assert v1.values["f1"].tolist() == [5.0, 0.0]
    assert v1.status("f2").tolist() == [PRESENT, MISSING]
    assert v1.event_timestamps_us.tolist() == [NOW_US, 0]
    v2 = got.block("stats", 2)
    assert v2.columns == ("trips",) and v2.values["trips"].dtype == np.int64
    assert v2.statuses.tolist() == [[MISSING], [MISSING]]
    # Two versions of the view answered: without a version, block() gave the first (v1 here, although
    # "stats:trips" read the latest), so a caller got another version's values with no word.
    with pytest.raises(InvalidArgument, match=r"^the answer holds view 'stats' at versions 1, 2; name one"):
        got.block("stats")
    assert not data_plane.watch.connected.is_set()


async def test_health_is_serving_and_reflection_lists_the_service(data_plane: DataPlaneHandle) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{data_plane.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "aether.v1.OnlineFeatures"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = [s.name async for r in responses for s in r.list_services_response.service]
    assert "aether.v1.OnlineFeatures" in names


async def test_without_any_snapshot_health_is_not_serving_and_reads_are_unavailable(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    handle = await start_server(_settings(own_redis.url, tmp_path / "absent.pb"))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        error = await _call(handle.port, ["stats"], [{"driver_id": "1"}])
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert error.details() == "no feature registry snapshot yet"
    finally:
        await handle.stop(None)


@pytest.mark.parametrize(
    ("features", "rows", "code", "text"),
    [
        (
            ["stats"],
            [{"driver_id": str(i)} for i in range(11)],
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "limit is 10",
        ),
        (["stats@x"], [{"driver_id": "1"}], grpc.StatusCode.INVALID_ARGUMENT, "malformed feature reference"),
        (["stats"], [{"driver_id": "one"}], grpc.StatusCode.INVALID_ARGUMENT, "row 0: join key 'driver_id'"),
        (["stats"], [{"rider_id": "1"}], grpc.StatusCode.INVALID_ARGUMENT, "row 0 has no value for join key"),
        (["nope:f0"], [{"driver_id": "1"}], grpc.StatusCode.NOT_FOUND, "'nope'"),
        (["stats:f9"], [{"driver_id": "1"}], grpc.StatusCode.NOT_FOUND, "'f9'"),
        (["stats@5"], [{"driver_id": "1"}], grpc.StatusCode.NOT_FOUND, "no servable version 5"),
    ],
)
async def test_bad_requests_get_their_status_and_a_message_naming_the_problem(
    data_plane: DataPlaneHandle,
    features: list[str],
    rows: list[dict[str, str]],
    code: grpc.StatusCode,
    text: str,
) -> None:
    error = await _call(data_plane.port, features, rows)
    assert error.code() == code
    assert text in (error.details() or "")


async def test_malformed_request_bytes_are_an_invalid_argument(data_plane: DataPlaneHandle) -> None:
    truncated = pb.GetOnlineFeaturesRequest(features=["stats:f0", "stats:f1"]).SerializeToString()[:-3]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{data_plane.port}") as channel:
        call = channel.unary_unary("/aether.v1.OnlineFeatures/GetOnlineFeatures")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(truncated, timeout=2.0)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed GetOnlineFeaturesRequest" in (info.value.details() or "")


@pytest.mark.parametrize("references_first", [True, False])
async def test_a_reference_that_is_not_utf8_is_an_invalid_argument_wherever_it_stands(
    data_plane: DataPlaneHandle, references_first: bool
) -> None:
    # References first take the fast path (split, then parsed on a plan-cache miss); after the rows, the
    # whole message is parsed: both must be the same client error, not INTERNAL.
    rows = pb.GetOnlineFeaturesRequest(rows=[pb.EntityRow(keys={"driver_id": "1"})]).SerializeToString()
    bad_reference = b"\x0a\x06st\xffats"  # field 1 (features), 6 bytes, one of them not UTF-8
    request = bad_reference + rows if references_first else rows + bad_reference
    async with grpc.aio.insecure_channel(f"127.0.0.1:{data_plane.port}") as channel:
        call = channel.unary_unary("/aether.v1.OnlineFeatures/GetOnlineFeatures")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(request, timeout=2.0)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed GetOnlineFeaturesRequest" in (info.value.details() or "")


async def test_references_after_the_rows_read_the_same_as_references_first(
    data_plane: DataPlaneHandle,
) -> None:
    """Valid encodings may put fields in any order: the bytes-keyed fast path must not change answers."""
    rows = pb.GetOnlineFeaturesRequest(rows=[pb.EntityRow(keys={"driver_id": "2"})]).SerializeToString()
    f2 = pb.GetOnlineFeaturesRequest(features=["stats@1:f2"]).SerializeToString()
    f0 = pb.GetOnlineFeaturesRequest(features=["stats@1:f0"]).SerializeToString()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{data_plane.port}") as channel:
        call = channel.unary_unary(
            "/aether.v1.OnlineFeatures/GetOnlineFeatures",
            response_deserializer=pb.GetOnlineFeaturesResponse.FromString,
        )
        answers = [await call(wire, timeout=2.0) for wire in (f2 + f0 + rows, rows + f2 + f0, f2 + rows + f0)]
    assert answers[0] == answers[1] == answers[2]
    assert np.frombuffer(answers[0].blocks[0].values, np.float32).tolist() == [6.0, 4.0]


async def test_redis_down_is_unavailable_within_the_deadline_and_reads_recover_by_themselves(
    data_plane: DataPlaneHandle, own_redis: RedisServer
) -> None:
    own_redis.stop()
    started = time.monotonic()
    error = await _call(data_plane.port, ["stats"], [{"driver_id": "1"}], deadline_s=1.0)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - started < 1.0

    paused = redis.Redis.from_url(own_redis.url)
    own_redis.start()
    OnlineWriter(redis.Redis.from_url(own_redis.url)).write(
        writable(STATS), [["1"]], np.array([[7, 8, 9]], np.float32), NOW_US
    )
    paused.execute_command(  # type: ignore[no-untyped-call]
        "CLIENT", "PAUSE", "2000", "ALL"
    )  # stalled rather than down: still no hang
    started = time.monotonic()
    error = await _call(data_plane.port, ["stats"], [{"driver_id": "1"}], deadline_s=0.25)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - started < 0.25
    paused.execute_command("CLIENT", "UNPAUSE")  # type: ignore[no-untyped-call]

    with OnlineFeaturesClient(f"127.0.0.1:{data_plane.port}") as client:
        got = await asyncio.to_thread(client.get_online_features, ["stats@1"], [{"driver_id": "1"}])
    assert got.block("stats").values["f2"].tolist() == [9.0]


async def test_no_method_is_registered_with_grpc_core(data_plane: DataPlaneHandle) -> None:
    # Each method registered with gRPC core costs every call (clients.server_handlers), ModelInfer included.
    assert pending_registered_method_requests() == 0


async def test_an_answer_over_the_send_limit_is_resource_exhausted_naming_the_limit_and_size(
    own_redis: RedisServer,
) -> None:
    """GetOnlineFeatures returned any answer, which gRPC then refused after the handler with a generic
    message ("Sent message larger than max"); ModelInfer and Predict already said which limit and size."""
    limit = 200
    state = RegistryState()
    state.catalog = Catalog(snapshot(STATS))
    client = RedisClient(own_redis.url)
    server = grpc.aio.server(options=[("grpc.max_send_message_length", limit)])
    add_to_server(
        OnlineFeaturesServicer(OnlineReader(state, client, ReadLimits()), max_send_bytes=limit), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.OnlineFeaturesStub(channel)  # type: ignore[no-untyped-call]
            small = pb.GetOnlineFeaturesRequest(
                features=["stats"], rows=[pb.EntityRow(keys={"driver_id": "1"})]
            )
            assert (await stub.GetOnlineFeatures(small, timeout=5)).row_count == 1
            rows = [pb.EntityRow(keys={"driver_id": str(i)}) for i in range(20)]
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetOnlineFeatures(
                    pb.GetOnlineFeaturesRequest(features=["stats"], rows=rows), timeout=5
                )
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert re.fullmatch(
            r"the response is \d+ bytes, more than the 200 this server sends in one message "
            r"\(max_message_bytes\); ask for fewer rows or outputs per call",
            refused.value.details() or "",
        ), refused.value.details()
    finally:
        await server.stop(None)
        await client.close()


async def test_the_server_holds_online_answers_to_its_max_message_bytes(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    # The servicer was built with its default limit (128 MiB), whatever the server's setting said.
    path = tmp_path / "registry_snapshot.pb"
    save_snapshot(path, snapshot(STATS, revision=1).SerializeToString())
    handle = await start_server(dataclasses.replace(_settings(own_redis.url, path), max_message_bytes=200))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            stub = pb_grpc.OnlineFeaturesStub(channel)  # type: ignore[no-untyped-call]
            rows = [pb.EntityRow(keys={"driver_id": str(i)}) for i in range(10)]
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetOnlineFeatures(
                    pb.GetOnlineFeaturesRequest(features=["stats"], rows=rows), timeout=5
                )
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "more than the 200 this server sends" in (refused.value.details() or "")
    finally:
        await handle.stop(None)


async def test_a_join_key_over_the_servers_limit_is_invalid_argument_naming_it_and_the_limit(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """``max_join_key_bytes`` (AETHER_MAX_JOIN_KEY_BYTES, as ingestion's) reaches the reads when the
    registry snapshot names no limit (one of an older control plane; else the snapshot's applies,
    test_join_key_limit_of_control_plane.py): a key no ingestion could have stored is refused, where it
    went to Redis and came back MISSING."""
    profile = view("profile", floats(1), entity="user")
    users = [entity("user", (("user_id", "string"),))]
    path = tmp_path / "registry_snapshot.pb"
    save_snapshot(path, snapshot(profile, entities=users).SerializeToString())
    settings = dataclasses.replace(_settings(own_redis.url, path), max_join_key_bytes=16)
    handle = await start_server(settings)
    try:
        await asyncio.wait_for(handle.serving.wait(), 10)
        with OnlineFeaturesClient(f"127.0.0.1:{handle.port}") as client:
            got = await asyncio.to_thread(client.get_online_features, ["profile"], [{"user_id": "é" * 8}])
            assert got.block("profile").status("f0").tolist() == [MISSING]
        error = await _call(handle.port, ["profile"], [{"user_id": "é" * 9}])
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details() == (
            "row 0: join key 'user_id' = 'ééééééééé' is 18 bytes of UTF-8, longer than the limit of 16 bytes"
            " for a join key (this data plane's AETHER_MAX_JOIN_KEY_BYTES); no key that long can have been"
            " ingested"
        )
    finally:
        await handle.stop(None)
