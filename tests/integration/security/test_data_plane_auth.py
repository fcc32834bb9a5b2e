"""Bearer-token auth on a real data plane: configured with the control plane's tokens, it answers online
features, Predict and the Open Inference Protocol only to callers presenting one of them (the read-only
one is enough), with the control plane's UNAUTHENTICATED messages to others; health and reflection stay
open; the fast raw-bytes paths still serve through the check; without tokens it serves everyone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import grpc.aio
import numpy as np
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from clients.aether.v1 import inference_pb2_grpc as pb_grpc
from clients.aether.v1 import online_features_pb2 as ofpb
from clients.aether.v1 import online_features_pb2_grpc as of_grpc
from clients.errors import Unauthenticated
from clients.inference import grpc_predict_v2_pb2 as oip
from clients.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from clients.sdk.auth import ChannelSecurity, open_aio_channel
from clients.sdk.inference import InferenceClient, build_infer_request, build_predict_request
from clients.sdk.online import OnlineFeaturesClient
from clients.server_auth import INVALID_TOKEN, MISSING_TOKEN, ServerTokens
from control_plane.features.online_writer import OnlineWriter
from data_plane.server import start_server
from tests.integration.security.conftest import ADMIN_TOKEN, READONLY_TOKEN
from tests.integration.serving.conftest import FEATURES, NOW_US, STORED, serving_settings
from tests.support.redis_server import RedisServer
from tests.unit.data_plane.registry_builders import writable

pytestmark = pytest.mark.integration

TOKENS = ServerTokens(admin_token=ADMIN_TOKEN, readonly_token=READONLY_TOKEN)
Metadata = tuple[tuple[str, str], ...]


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    writer = OnlineWriter(redis.Redis.from_url(server.url))
    writer.write(writable(FEATURES), [[str(k)] for k in STORED], np.stack(list(STORED.values())), NOW_US)
    yield server
    server.close()


@pytest.fixture
async def secured(own_redis: RedisServer, tmp_path: Path) -> AsyncIterator[str]:
    handle = await start_server(serving_settings(tmp_path, own_redis.url, auth=TOKENS))
    yield f"127.0.0.1:{handle.port}"
    await handle.stop(None)


def _bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def _features_request() -> ofpb.GetOnlineFeaturesRequest:
    return ofpb.GetOnlineFeaturesRequest(
        features=["driver_stats"], rows=[ofpb.EntityRow(keys={"driver_id": "1"})]
    )


async def _refusal(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call  # type: ignore[misc]
    return failed.value.code(), failed.value.details() or ""


async def test_every_data_api_needs_a_token(secured: str) -> None:
    infer = build_infer_request("affine", {"x": np.ones((1, 4), dtype=np.float32)})
    predict = build_predict_request("scorer", [{"driver_id": 1}])
    async with grpc.aio.insecure_channel(secured) as channel:
        features = of_grpc.OnlineFeaturesStub(channel)  # type: ignore[no-untyped-call]
        inference = pb_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]
        oip_stub = oip_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        calls: dict[str, Callable[[Metadata], Awaitable[object]]] = {
            "GetOnlineFeatures": lambda md: features.GetOnlineFeatures(_features_request(), metadata=md),
            "Predict": lambda md: inference.Predict(predict, metadata=md),
            "ModelInfer": lambda md: oip_stub.ModelInfer(infer, metadata=md),
            "ModelMetadata": lambda md: oip_stub.ModelMetadata(
                oip.ModelMetadataRequest(name="affine"), metadata=md
            ),
        }
        for name, call in calls.items():
            # No token, a wrong one: refused before anything is read, as the control plane refuses.
            assert await _refusal(call(())) == (grpc.StatusCode.UNAUTHENTICATED, MISSING_TOKEN), name
            wrong = await _refusal(call(_bearer(READONLY_TOKEN + "x")))
            assert wrong == (grpc.StatusCode.UNAUTHENTICATED, INVALID_TOKEN), name
            # Either configured token is served: every API here only reads.
            for token in (READONLY_TOKEN, ADMIN_TOKEN):
                await call(_bearer(token))
        # Health (load balancers, the replica manager, the container health check) and reflection
        # (ghz) need no secret.
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        async for reply in reflection.ServerReflectionInfo(iter([ask])):
            names = {service.name for service in reply.list_services_response.service}
            assert "inference.GRPCInferenceService" in names


def _sdk_calls(address: str) -> None:
    reader = ChannelSecurity(token=READONLY_TOKEN)
    with OnlineFeaturesClient(address, security=reader) as online:
        values = online.get_online_features(["driver_stats"], [{"driver_id": 1}]).block("driver_stats")
        assert np.allclose(values.values["f0"], STORED[1][:1])
    with InferenceClient(address, security=reader) as inference:
        outputs = inference.infer("affine", {"x": np.ones((1, 4), dtype=np.float32)})
        assert np.array_equal(outputs["y"], np.full((1, 4), 3.0, dtype=np.float32))
        assert inference.predict("scorer", [{"driver_id": 1}]).model_name == "scorer"
    anonymous = InferenceClient(address, security=ChannelSecurity())
    with anonymous, pytest.raises(Unauthenticated, match="missing `authorization"):
        anonymous.predict("scorer", [{"driver_id": 1}])


async def test_the_sdk_clients_send_the_read_only_token(secured: str) -> None:
    """The raw-bytes paths of ModelInfer and Predict, and the online features client, answer through the
    check; the SDK without a token gets Unauthenticated."""
    await asyncio.to_thread(_sdk_calls, secured)  # the synchronous clients, off the server's loop
    async with open_aio_channel(secured, ChannelSecurity(token=READONLY_TOKEN)) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        assert (await stub.ServerReady(oip.ServerReadyRequest(), timeout=5)).ready


async def test_without_tokens_the_data_plane_serves_every_caller(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    handle = await start_server(serving_settings(tmp_path, own_redis.url))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            features = of_grpc.OnlineFeaturesStub(channel)  # type: ignore[no-untyped-call]
            answer = await features.GetOnlineFeatures(_features_request(), timeout=5)
            assert answer.row_count == 1
    finally:
        await handle.stop(None)


async def test_inference_calls_refused_for_their_token_are_counted(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """Every Predict and ModelInfer call is counted with the status its caller saw, but those the token
    check refused never reached the servicers' counting: a client that lost its token showed nowhere."""
    handle = await start_server(serving_settings(tmp_path, own_redis.url, auth=TOKENS))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            inference = pb_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]
            oip_stub = oip_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
            infer = build_infer_request("affine", {"x": np.ones((1, 4), dtype=np.float32)})
            for _ in range(2):
                await _refusal(oip_stub.ModelInfer(infer))
            await _refusal(inference.Predict(build_predict_request("scorer", [{"driver_id": 1}])))
            features = of_grpc.OnlineFeaturesStub(channel)  # type: ignore[no-untyped-call]
            await _refusal(features.GetOnlineFeatures(_features_request()))  # not an inference call
        counted = {
            api: handle.metrics.registry.get_sample_value(
                "aether_inference_requests_total",
                {"api": api, "model": "", "version": "", "code": "UNAUTHENTICATED"},
            )
            for api in ("ModelInfer", "Predict", "GetOnlineFeatures")
        }
        assert counted == {"ModelInfer": 2.0, "Predict": 1.0, "GetOnlineFeatures": None}
    finally:
        await handle.stop(None)
