"""A real data plane serving static models (``--model-config``) follows deployment plans streamed by a
control plane (a real grpc.aio ``Deployments`` server fed from a queue): a plan that refers to a static
model's version and is later replaced by one that does not leaves the static model serving, while a
version only the plans loaded is unloaded; a plan that changes only a loaded version's serving config
(``allow_non_finite``) takes effect at once; the overall health turns SERVING only once the first plans'
versions have loaded, or at once when no control plane answers."""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import numpy as np
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import deployments_pb2_grpc as dpb_grpc
from clients.aether.v1 import inference_pb2_grpc as pb_grpc
from clients.aether.v1 import model_registry_pb2 as mpb
from clients.inference import grpc_predict_v2_pb2 as v2
from clients.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from clients.sdk.inference import build_predict_request, decode_predict_response
from control_plane.features.online_writer import OnlineWriter
from data_plane.models.spec import ModelSpec, TensorSpec, load_model_config
from data_plane.models.version import ModelState
from data_plane.server import start_server
from tests.integration.closed_loop.models import slow_on_features
from tests.integration.serving.conftest import FEATURES, NOW_US, STORED, serving_settings
from tests.support import onnx_models
from tests.support.redis_server import RedisServer
from tests.unit.data_plane.registry_builders import writable

pytestmark = pytest.mark.integration


class _QueuedPlans(dpb_grpc.DeploymentsServicer):
    """The control plane's plan stream: yields the snapshots put on the queue."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dpb.DeploymentPlanSnapshot] = asyncio.Queue()

    async def WatchDeploymentPlans(
        self, request: dpb.WatchDeploymentPlansRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[dpb.DeploymentPlanSnapshot]:
        while True:
            yield await self.queue.get()


@pytest.fixture
async def control_plane() -> AsyncIterator[tuple[_QueuedPlans, int]]:
    """A real grpc.aio ``Deployments`` server on 127.0.0.1 streaming the snapshots put on its queue, and
    its port."""
    server = grpc.aio.server()
    plans = _QueuedPlans()
    dpb_grpc.add_DeploymentsServicer_to_server(plans, server)  # type: ignore[no-untyped-call]
    # Port 0, the kernel's pick, bound at once: a port picked free and bound later was another test
    # worker's to take meanwhile. The server never restarts, so no fixed port is needed.
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield plans, port
    await server.stop(None)


def _planned(spec: ModelSpec, name: str, serving: dpb.ServingConfig | None = None) -> dpb.PlannedVariant:
    def tensors(specs: tuple[TensorSpec, ...]) -> list[mpb.TensorSpec]:
        return [mpb.TensorSpec(name=t.name, dtype=t.dtype, shape=t.shape) for t in specs]

    model = dpb.ModelServingSpec(
        model_name=spec.name, version=spec.version, artifact_sha256=spec.artifact_sha256,
        artifact_uri=spec.artifact_uri, inputs=tensors(spec.inputs), outputs=tensors(spec.outputs),
        feature_refs=spec.feature_refs, serving=serving or dpb.ServingConfig(warmup_requests=1),
    )  # fmt: skip
    return dpb.PlannedVariant(name=name, role=dpb.VARIANT_ROLE_PRIMARY, traffic_percent=100.0, model=model)


def _snapshot(
    revision: int, *plans: tuple[str, ModelSpec], serving: dpb.ServingConfig | None = None
) -> dpb.DeploymentPlanSnapshot:
    return dpb.DeploymentPlanSnapshot(
        revision=revision,
        plans=[
            dpb.DeploymentPlan(
                deployment=deployment,
                plan_revision=revision,
                routing_salt=deployment,
                variants=[_planned(spec, "blue", serving)],
            )
            for deployment, spec in plans
        ],
    )


async def test_plans_that_stop_referring_to_a_static_model_leave_it_serving(
    own_redis: RedisServer, tmp_path: Path, control_plane: tuple[_QueuedPlans, int]
) -> None:
    plans, port = control_plane
    settings = serving_settings(
        tmp_path, own_redis.url, control_plane_addr=f"127.0.0.1:{port}", watch_backoff_initial_s=0.05
    )
    assert settings.model_config is not None
    affine = next(s for s in load_model_config(settings.model_config) if s.name == "affine")
    planned_only = onnx_models.save(onnx_models.affine(), tmp_path / "planned.onnx", "planned_only")
    handle = await start_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            stub = v2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
            x = np.ones((1, 4), np.float32)
            request = v2.ModelInferRequest(
                model_name="affine",
                inputs=[v2.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1, 4])],
                raw_input_contents=[x.tobytes()],
            )
            expected = (await stub.ModelInfer(request, timeout=5)).raw_output_contents[0]

            await plans.queue.put(_snapshot(1, ("static-dep", affine), ("planned-dep", planned_only)))
            await handle.deployments.wait_for_revision(1, 10)
            assert handle.manager.state("planned_only", 1) is ModelState.READY

            await plans.queue.put(_snapshot(2))  # neither deployment is planned any more
            await handle.deployments.wait_for_revision(2, 10)
            await handle.manager.released()

            assert handle.manager.state("planned_only", 1) is ModelState.UNLOADED  # the watch's own
            assert handle.manager.state("affine", 1) is ModelState.READY  # the static config's
            response = await stub.ModelInfer(request, timeout=5)
            assert response.raw_output_contents[0] == expected

            # Referred to again and dropped again: still the static config's.
            await plans.queue.put(_snapshot(3, ("static-dep", affine)))
            await handle.deployments.wait_for_revision(3, 10)
            await plans.queue.put(_snapshot(4))
            await handle.deployments.wait_for_revision(4, 10)
            assert handle.manager.state("affine", 1) is ModelState.READY
            assert (await stub.ModelInfer(request, timeout=5)).raw_output_contents[0] == expected
    finally:
        await handle.stop(None)


async def test_a_plan_that_changes_only_the_serving_config_applies_it_to_the_loaded_version(
    own_redis: RedisServer, tmp_path: Path, control_plane: tuple[_QueuedPlans, int]
) -> None:
    """allow_non_finite false -> true for a version already loaded: the next Predict with a NaN request
    feature reaches the model instead of being refused (the version is not reloaded)."""
    writer = OnlineWriter(redis.Redis.from_url(own_redis.url))
    writer.write(writable(FEATURES), [["1"]], STORED[1][np.newaxis, :], NOW_US)
    plans, port = control_plane
    settings = serving_settings(
        tmp_path, own_redis.url, control_plane_addr=f"127.0.0.1:{port}", watch_backoff_initial_s=0.05
    )
    spec = onnx_models.save(
        onnx_models.mlp(input_size=3, hidden=(4,)), tmp_path / "lenient.onnx", "nan_tolerant",
        feature_refs=("driver_stats:f7", "request:hour", "driver_stats:f0"),
    )  # fmt: skip
    handle = await start_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            stub = pb_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]
            request = build_predict_request("dep", [{"driver_id": 1}], request_features=[{"hour": math.nan}])

            strict = dpb.ServingConfig(warmup_requests=1, allow_non_finite=False)
            await plans.queue.put(_snapshot(1, ("dep", spec), serving=strict))
            await handle.deployments.wait_for_revision(1, 10)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Predict(request, timeout=5)
            assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "NaN or infinite" in (refused.value.details() or "")

            lenient = dpb.ServingConfig(warmup_requests=1, allow_non_finite=True)
            await plans.queue.put(_snapshot(2, ("dep", spec), serving=lenient))
            await handle.deployments.wait_for_revision(2, 10)
            result = decode_predict_response(await stub.Predict(request, timeout=5))
            assert (result.model_name, result.model_version) == ("nan_tolerant", 1)
            assert handle.manager.resolve("nan_tolerant", 1).allow_non_finite
            with handle.manager.lease("nan_tolerant", 1) as lease:
                assert lease.spec.allow_non_finite

            # And back: refused again.
            await plans.queue.put(_snapshot(3, ("dep", spec), serving=strict))
            await handle.deployments.wait_for_revision(3, 10)
            with pytest.raises(grpc.aio.AioRpcError) as again:
                await stub.Predict(request, timeout=5)
            assert again.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await handle.stop(None)


async def test_a_version_that_failed_to_load_is_loaded_again_once_its_artifact_is_back(
    own_redis: RedisServer, tmp_path: Path, control_plane: tuple[_QueuedPlans, int]
) -> None:
    """A load that failed once (the artifact store did not answer at start) was never tried again: the
    watch counted the version as loaded, so the deployment answered UNAVAILABLE until its plan changed or
    the data plane restarted. The watch now retries failed versions by itself, with backoff."""
    plans, port = control_plane
    settings = serving_settings(
        tmp_path, own_redis.url, control_plane_addr=f"127.0.0.1:{port}", watch_backoff_initial_s=0.05
    )
    spec = onnx_models.save(onnx_models.affine(), tmp_path / "flaky.onnx", "flaky")
    artifact = Path(spec.artifact_uri.removeprefix("file://"))
    hidden = artifact.with_name("flaky.onnx.away")
    os.rename(artifact, hidden)  # the store cannot give the artifact for now
    handle = await start_server(settings)
    try:
        await plans.queue.put(_snapshot(1, ("dep", spec)))
        await handle.deployments.wait_for_revision(1, 10)
        assert handle.manager.state("flaky", 1) is ModelState.FAILED
        os.rename(hidden, artifact)  # back, and no new plan arrives
        deadline = asyncio.get_running_loop().time() + 10
        while handle.manager.state("flaky", 1) is not ModelState.READY:
            assert asyncio.get_running_loop().time() < deadline, handle.manager.state("flaky", 1)
            await asyncio.sleep(0.1)
    finally:
        await handle.stop(None)


async def test_a_static_model_that_failed_to_load_at_start_is_loaded_once_its_artifact_is_back(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """The static model config's versions are loaded once at start; one whose artifact could not be read
    then stayed FAILED until a restart. The deployment watch's retry loop now tries it again too."""
    settings = serving_settings(tmp_path, own_redis.url)
    artifact = tmp_path / "models" / "two.onnx"
    os.rename(artifact, artifact.with_name("two.onnx.away"))  # unreadable while the data plane starts
    handle = await start_server(settings)
    try:
        assert handle.manager.state("two_inputs", 1) is ModelState.FAILED
        os.rename(artifact.with_name("two.onnx.away"), artifact)
        deadline = asyncio.get_running_loop().time() + 10
        while handle.manager.state("two_inputs", 1) is not ModelState.READY:
            assert asyncio.get_running_loop().time() < deadline, handle.manager.state("two_inputs", 1)
            await asyncio.sleep(0.1)
        assert handle.manager.state("affine", 1) is ModelState.READY  # the others untouched
    finally:
        await handle.stop(None)


async def _overall_health(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return int(answer.status)


async def _until_serving(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while await _overall_health(port) != health_pb2.HealthCheckResponse.SERVING:
        assert time.monotonic() < deadline, "the overall health never turned SERVING"
        await asyncio.sleep(0.02)


async def test_the_overall_health_turns_serving_only_once_the_first_plans_have_loaded(
    own_redis: RedisServer, tmp_path: Path, control_plane: tuple[_QueuedPlans, int]
) -> None:
    """A fresh data plane (no persisted plans) turned SERVING as soon as its catalog was in, so the
    replica manager listed it while its first plans' model still loaded: every Predict of the deployment
    answered NOT_FOUND meanwhile. It is SERVING only once the plans are in and their loads settled."""
    plans, port = control_plane
    settings = serving_settings(
        tmp_path, own_redis.url, control_plane_addr=f"127.0.0.1:{port}", watch_backoff_initial_s=0.05
    )
    slow = onnx_models.save(
        slow_on_features(layers=150), tmp_path / "slow.onnx", "slow",
        feature_refs=tuple(f"request:f{i}" for i in range(4)),
    )  # fmt: skip
    await plans.queue.put(_snapshot(1, ("dep", slow)))  # what the control plane answers at once
    handle = await start_server(settings)
    try:
        await _until_serving(handle.port, 60)
        assert handle.deployments.current().get("dep") is not None
        assert handle.manager.state("slow", 1) is ModelState.READY
        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            stub = pb_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]
            request = build_predict_request(
                "dep", [{"driver_id": 1}], request_features=[{f"f{i}": 0.5 for i in range(4)}]
            )
            result = decode_predict_response(await stub.Predict(request, timeout=20))
            assert (result.model_name, result.model_version) == ("slow", 1)
    finally:
        await handle.stop(None)


async def test_without_a_reachable_control_plane_the_overall_health_turns_serving_at_once(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """No plans are coming (nothing listens at the control plane's address): the static models and the
    registry snapshot are served, well before the wait for a silent control plane (PLANS_WAIT_S, 5 s)."""
    handle = await start_server(serving_settings(tmp_path, own_redis.url))
    try:
        await _until_serving(handle.port, 2.5)
        assert handle.serving.is_set()
    finally:
        await handle.stop(None)
