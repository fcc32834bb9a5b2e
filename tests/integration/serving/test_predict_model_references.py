"""A Predict whose model's feature references cannot be read (a view that is not registered, retired, a
version or feature it lacks, a malformed reference in a deployment plan) is refused naming the deployment,
the model and the version whose references are wrong: the message named the feature view alone, and an
operator could not tell which model to fix. A malformed reference is the model's configuration's fault,
not the caller's: FAILED_PRECONDITION (it was INVALID_ARGUMENT). The static model config refuses one when
it is loaded (``tests/unit/serving/test_manager.py``), so only a plan brings one here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import numpy as np
import pytest
import redis

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import inference_pb2_grpc as pb_grpc
from clients.aether.v1 import model_registry_pb2 as mpb
from clients.aether.v1 import types_pb2
from clients.sdk.inference import build_predict_request, decode_predict_response
from control_plane.features.online_writer import OnlineWriter
from data_plane.deployment_watch import plans_path
from data_plane.models.spec import ModelSpec, TensorSpec, dump_model_config
from data_plane.registry_watch import save_snapshot
from data_plane.server import DataPlaneHandle, start_server
from tests.integration.serving.conftest import FEATURES, NOW_US, STORED, model_specs, serving_settings
from tests.support import onnx_models
from tests.support.redis_server import RedisServer
from tests.unit.data_plane.registry_builders import floats, snapshot, view, writable

pytestmark = pytest.mark.integration

RETIRED = view("old_stats", floats(8), status=types_pb2.RETIRED)
# Model name -> (its feature references, the status they are refused with, what the message says of them).
BROKEN = {
    "unregistered": (("missing_view",), grpc.StatusCode.NOT_FOUND, "'missing_view' is not registered"),
    "retired": (("old_stats@1",), grpc.StatusCode.NOT_FOUND, "'old_stats' is not registered"),
    "no_version": (("driver_stats@7",), grpc.StatusCode.NOT_FOUND, "no servable version 7"),
    "no_feature": (("driver_stats@1:nope",), grpc.StatusCode.NOT_FOUND, "has no feature 'nope'"),
}


def _planned(spec: ModelSpec, name: str) -> dpb.PlannedVariant:
    def tensors(specs: tuple[TensorSpec, ...]) -> list[mpb.TensorSpec]:
        return [mpb.TensorSpec(name=t.name, dtype=t.dtype, shape=t.shape) for t in specs]

    model = dpb.ModelServingSpec(
        model_name=spec.name, version=spec.version, artifact_sha256=spec.artifact_sha256,
        artifact_uri=spec.artifact_uri, inputs=tensors(spec.inputs), outputs=tensors(spec.outputs),
        feature_refs=spec.feature_refs, serving=dpb.ServingConfig(warmup_requests=1),
    )  # fmt: skip
    return dpb.PlannedVariant(name=name, role=dpb.VARIANT_ROLE_PRIMARY, traffic_percent=100.0, model=model)


@pytest.fixture
async def data_plane(own_redis: RedisServer, tmp_path: Path) -> AsyncIterator[DataPlaneHandle]:
    """The serving tests' data plane, its static config holding one model per kind of broken references
    (version 3 each, so the version is named apart from other numbers), and a persisted plan of deployment
    "ranking" whose primary is a version 2 of "unregistered", and one of deployment "scoring" whose primary
    is a version 4 of "malformed", its reference one the control plane never sends (a plan persisted by hand,
    or sent by a control plane that did not check it)."""
    OnlineWriter(redis.Redis.from_url(own_redis.url)).write(
        writable(FEATURES), [["1"]], STORED[1][np.newaxis, :], NOW_US
    )
    settings = serving_settings(tmp_path, own_redis.url)
    assert settings.model_config is not None and settings.snapshot_path is not None
    mlp = onnx_models.mlp(input_size=8, hidden=(4,))
    broken = [
        onnx_models.save(mlp, tmp_path / f"{name}.onnx", name, version=3, feature_refs=refs)
        for name, (refs, _, _) in BROKEN.items()
    ]
    dump_model_config([*model_specs(tmp_path / "models"), *broken], settings.model_config)
    save_snapshot(settings.snapshot_path, snapshot(FEATURES, RETIRED).SerializeToString())
    primary = onnx_models.save(
        mlp, tmp_path / "planned.onnx", "unregistered", version=2, feature_refs=("missing_view",)
    )
    malformed = onnx_models.save(
        mlp, tmp_path / "malformed.onnx", "malformed", version=4, feature_refs=("driver_stats@x",)
    )
    plans = [
        dpb.DeploymentPlan(deployment="ranking", plan_revision=1, variants=[_planned(primary, "blue")]),
        dpb.DeploymentPlan(deployment="scoring", plan_revision=1, variants=[_planned(malformed, "green")]),
    ]
    save_snapshot(
        plans_path(settings), dpb.DeploymentPlanSnapshot(revision=1, plans=plans).SerializeToString()
    )
    handle = await start_server(settings)
    yield handle
    await handle.stop(None)


@pytest.fixture
async def stub(data_plane: DataPlaneHandle) -> AsyncIterator[pb_grpc.InferenceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{data_plane.port}") as channel:
        yield pb_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]


async def _refusal(stub: pb_grpc.InferenceStub, deployment: str) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Predict(build_predict_request(deployment, [{"driver_id": 1}]), timeout=5)
    return info.value.code(), info.value.details() or ""


@pytest.mark.parametrize("model", list(BROKEN))
async def test_a_static_models_unreadable_reference_names_the_model_and_version(
    stub: pb_grpc.InferenceStub, model: str
) -> None:
    _, status, problem = BROKEN[model]
    for _ in range(2):  # the second request finds nothing cached that would lose the names
        code, details = await _refusal(stub, model)
        assert code == status, details
        assert problem in details, details
        assert f"deployment {model!r}" in details and f"model {model} v3" in details, details


async def test_a_plans_unreadable_reference_names_the_deployment_variant_and_model(
    stub: pb_grpc.InferenceStub,
) -> None:
    code, details = await _refusal(stub, "ranking")
    assert code == grpc.StatusCode.NOT_FOUND, details
    assert "'missing_view' is not registered" in details, details
    assert "deployment 'ranking'" in details and "variant 'blue'" in details, details
    assert "model unregistered v2" in details, details


async def test_a_plans_malformed_reference_is_the_models_failed_precondition(
    stub: pb_grpc.InferenceStub,
) -> None:
    for _ in range(2):  # the second request finds nothing cached that would change the answer
        code, details = await _refusal(stub, "scoring")
        assert code == grpc.StatusCode.FAILED_PRECONDITION, details
        assert "malformed feature reference 'driver_stats@x'" in details, details
        assert "deployment 'scoring'" in details and "variant 'green'" in details, details
        assert "model malformed v4" in details, details


async def test_a_model_reading_a_served_view_still_answers(stub: pb_grpc.InferenceStub) -> None:
    request = build_predict_request("scorer", [{"driver_id": 1}])
    result = decode_predict_response(await stub.Predict(request, timeout=5))
    assert (result.model_name, result.model_version) == ("scorer", 2)
