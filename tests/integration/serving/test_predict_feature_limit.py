"""A model that reads more features than the data plane's per-request limit: the model's configuration,
not the caller's request, so FAILED_PRECONDITION naming the model, its count, the limit and the setting
that raises it (it was RESOURCE_EXHAUSTED "... features per request", which tells a caller who sent one
entity id to send less). GetOnlineFeatures, where the caller chose the references, keeps
RESOURCE_EXHAUSTED."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import numpy as np
import pytest
import redis

from clients.aether.v1 import inference_pb2_grpc as pb_grpc
from clients.aether.v1 import online_features_pb2 as ofpb
from clients.aether.v1 import online_features_pb2_grpc as ofpb_grpc
from clients.sdk.inference import build_predict_request, decode_predict_response
from control_plane.features.online_writer import OnlineWriter
from data_plane.server import DataPlaneHandle, start_server
from tests.integration.serving.conftest import FEATURES, NOW_US, STORED, load_as_static, serving_settings
from tests.support import onnx_models
from tests.support.redis_server import RedisServer
from tests.unit.data_plane.registry_builders import writable

pytestmark = pytest.mark.integration

LIMIT = 4


@pytest.fixture
async def small_plane(own_redis: RedisServer, tmp_path: Path) -> AsyncIterator[DataPlaneHandle]:
    writer = OnlineWriter(redis.Redis.from_url(own_redis.url))
    writer.write(writable(FEATURES), [[str(k)] for k in STORED], np.stack(list(STORED.values())), NOW_US)
    handle = await start_server(serving_settings(tmp_path, own_redis.url, max_features_per_request=LIMIT))
    yield handle
    await handle.stop(None)


@pytest.fixture
async def channel(small_plane: DataPlaneHandle) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{small_plane.port}") as channel:
        yield channel


@pytest.mark.parametrize(
    ("refs", "counted"),
    [
        (("driver_stats",), "8 online features"),  # one reference, a whole view of 8
        (tuple(f"driver_stats:f{i}" for i in range(5)), "5 online feature references"),
    ],
)
async def test_a_model_reading_more_features_than_the_limit_is_its_configuration(
    small_plane: DataPlaneHandle,
    channel: grpc.aio.Channel,
    tmp_path: Path,
    refs: tuple[str, ...],
    counted: str,
) -> None:
    spec = onnx_models.save(
        onnx_models.mlp(input_size=len(refs) if len(refs) > 1 else 8, hidden=(4,)),
        tmp_path / "wide.onnx",
        "wide",
        feature_refs=refs,
    )
    await load_as_static(small_plane, spec)
    stub = pb_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Predict(build_predict_request("wide", [{"driver_id": 1}]), timeout=5)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION, refused.value.details()
    details = refused.value.details() or ""
    assert f"model wide v1 reads {counted}" in details
    assert f"at most {LIMIT}" in details and "AETHER_MAX_FEATURES_PER_REQUEST" in details
    # A model within the limit is served by the same data plane.
    narrow = onnx_models.save(
        onnx_models.mlp(input_size=2, hidden=(4,)), tmp_path / "narrow.onnx", "narrow",
        feature_refs=("driver_stats:f0", "driver_stats:f1"),
    )  # fmt: skip
    await load_as_static(small_plane, narrow)
    answer = decode_predict_response(await stub.Predict(build_predict_request("narrow", [{"driver_id": 1}])))
    assert answer.missing_features == (0,)


async def test_get_online_features_over_the_limit_is_still_the_requests(channel: grpc.aio.Channel) -> None:
    stub = ofpb_grpc.OnlineFeaturesStub(channel)  # type: ignore[no-untyped-call]
    request = ofpb.GetOnlineFeaturesRequest(features=["driver_stats"])
    request.rows.add().keys["driver_id"] = "1"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.GetOnlineFeatures(request, timeout=5)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
