"""What a missing stored feature (a null in the blob, or no key at all) becomes in Predict's model input,
over a real data plane and redis-server: NaN for a model that imputes missing values itself (the built-in
trainer's models were trained with missing = NaN and impute the training mean in the graph; a 0 is a value
they never saw there), and the deployment's ``feature_defaults``, when set, for every missing value; a
shadow gets its own fill, not the served version's."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import grpc
import grpc.aio
import numpy as np
import onnxruntime as ort
import pytest
import redis

from clients.aether.v1 import inference_pb2_grpc as pb_grpc
from clients.sdk.inference import build_predict_request, decode_predict_response
from control_plane.features.online_writer import OnlineWriter
from data_plane.deployment_plan import DeploymentPlan, DeploymentPlans, Variant
from data_plane.deployment_plan import Role as PlanRole
from data_plane.feature_vector import FeatureAssembler
from data_plane.models.spec import ModelSpec
from data_plane.predictor import PredictCall, Predictor
from data_plane.server import DataPlaneHandle
from tests.integration.serving.conftest import DEFAULTS, FEATURES, NOW_US, STORED, load_as_static
from tests.support import onnx_models
from tests.support.redis_server import RedisServer
from tests.unit.data_plane.registry_builders import writable

pytestmark = pytest.mark.integration

# A training mean far from 0 in every column, so imputing it and feeding 0 give different predictions.
MEAN = np.linspace(-3.0, 4.0, 8).astype(np.float32)
# Driver 7's stored features, with feature f2 null.
ROW7 = np.arange(8, dtype=np.float32) + 1.0
NULL_COLUMN = 2


@pytest.fixture
async def stub(data_plane: DataPlaneHandle) -> AsyncIterator[pb_grpc.InferenceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{data_plane.port}") as channel:
        yield pb_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]


@pytest.fixture
def driver_7_with_a_null(own_redis: RedisServer, data_plane: DataPlaneHandle) -> None:
    nulls = np.zeros((1, 8), dtype=bool)
    nulls[0, NULL_COLUMN] = True
    writer = OnlineWriter(redis.Redis.from_url(own_redis.url))
    writer.write(writable(FEATURES), [["7"]], ROW7[np.newaxis, :], NOW_US, nulls=nulls)


def _run_model(spec: ModelSpec, features: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(Path(spec.artifact_uri).read_bytes())
    return np.asarray(session.run(None, {spec.inputs[0].name: features.astype(np.float32)})[0])


def _with(column_value: float) -> np.ndarray:
    row = ROW7.copy()
    row[NULL_COLUMN] = column_value
    return row


@pytest.mark.usefixtures("driver_7_with_a_null")
async def test_a_model_that_imputes_missing_values_gets_them_as_nan(
    data_plane: DataPlaneHandle, stub: pb_grpc.InferenceStub, tmp_path: Path
) -> None:
    spec = onnx_models.save(
        onnx_models.mlp(input_size=8, hidden=(4,), seed=3, impute_mean=MEAN.tolist()),
        tmp_path / "imputing.onnx",
        "imputing", feature_refs=("driver_stats",), allow_non_finite=True, missing_entity_policy="defaults",
    )  # fmt: skip
    await load_as_static(data_plane, spec)
    imputed = _run_model(spec, _with(float(MEAN[NULL_COLUMN]))[np.newaxis, :])
    zeroed = _run_model(spec, _with(0.0)[np.newaxis, :])
    assert not np.allclose(imputed, zeroed, rtol=1e-3)  # else the test could not tell the two apart

    one = decode_predict_response(
        await stub.Predict(build_predict_request("imputing", [{"driver_id": 7}]), timeout=5)
    )
    assert one.missing_features == (1,) and one.used_defaults == (False,)
    np.testing.assert_allclose(one.outputs["output"], imputed, rtol=1e-5)

    # Several rows take the numpy path; an entity with no stored features (the 'defaults' policy) gets
    # every feature as NaN, so the model sees its training mean.
    rows = [{"driver_id": 7}, {"driver_id": 1}, {"driver_id": 3}]
    many = decode_predict_response(await stub.Predict(build_predict_request("imputing", rows), timeout=5))
    assert many.missing_features == (1, 0, 8) and many.used_defaults == (False, False, True)
    expected = _run_model(spec, np.stack([_with(float(MEAN[NULL_COLUMN])), STORED[1], MEAN]))
    np.testing.assert_allclose(many.outputs["output"], expected, rtol=1e-5)


@pytest.mark.usefixtures("driver_7_with_a_null")
async def test_feature_defaults_fill_each_missing_feature_whatever_the_policy(
    data_plane: DataPlaneHandle, stub: pb_grpc.InferenceStub, tmp_path: Path
) -> None:
    spec = onnx_models.save(
        onnx_models.mlp(input_size=8, hidden=(4,), seed=3), tmp_path / "defaulted.onnx", "defaulted",
        feature_refs=("driver_stats",), feature_defaults=DEFAULTS,
    )  # fmt: skip  # the 'error' policy: an entity with no stored features is still refused
    await load_as_static(data_plane, spec)
    result = decode_predict_response(
        await stub.Predict(build_predict_request("defaulted", [{"driver_id": 7}]), timeout=5)
    )
    assert result.missing_features == (1,) and result.used_defaults == (False,)
    expected = _run_model(spec, _with(DEFAULTS[NULL_COLUMN])[np.newaxis, :])
    np.testing.assert_allclose(result.outputs["output"], expected, rtol=1e-5)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Predict(build_predict_request("defaulted", [{"driver_id": 3}]), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND

    # Explicit defaults win over NaN for a model that imputes itself: the deployment chose them.
    imputing = onnx_models.save(
        onnx_models.mlp(input_size=8, hidden=(4,), seed=3, impute_mean=MEAN.tolist()),
        tmp_path / "imputing.onnx",
        "imputing", feature_refs=("driver_stats",), allow_non_finite=True, feature_defaults=DEFAULTS,
    )  # fmt: skip
    await load_as_static(data_plane, imputing)
    chosen = decode_predict_response(
        await stub.Predict(build_predict_request("imputing", [{"driver_id": 7}]), timeout=5)
    )
    expected = _run_model(imputing, _with(DEFAULTS[NULL_COLUMN])[np.newaxis, :])
    np.testing.assert_allclose(chosen.outputs["output"], expected, rtol=1e-5)


@pytest.mark.usefixtures("driver_7_with_a_null")
async def test_a_shadow_gets_its_own_fill_for_a_missing_feature_from_the_same_read(
    data_plane: DataPlaneHandle, own_redis: RedisServer, tmp_path: Path
) -> None:
    """The shadow reused the served input whenever it read the same references in the same dtype: an
    imputing shadow behind a strict primary got 0 for the null, and a strict shadow behind an imputing
    primary got NaN, which it refused (INVALID_ARGUMENT). Each is now filled as its own version says, from
    the served request's read (no second MGET)."""
    identity = onnx_models.tiled(8, 1)  # the output is the input the model was fed
    plain = onnx_models.save(identity, tmp_path / "plain.onnx", "plain", feature_refs=("driver_stats",))
    imputing = onnx_models.save(
        identity,
        tmp_path / "imputing.onnx",
        "imputing",
        feature_refs=("driver_stats",),
        allow_non_finite=True,
    )
    for spec in (plain, imputing):
        await data_plane.manager.ensure_loaded(spec)

    def plan(name: str, primary: ModelSpec, shadow: ModelSpec) -> DeploymentPlan:
        variants = (
            Variant("blue", PlanRole.PRIMARY, 100.0, primary),
            Variant("green", PlanRole.SHADOW, 100.0, shadow),
        )
        return DeploymentPlan(deployment=name, plan_revision=1, routing_salt=name, variants=variants)

    plans = DeploymentPlans(
        revision=1, plans={"a": plan("a", plain, imputing), "b": plan("b", imputing, plain)}
    )
    log = data_plane.prediction_log
    predictor = Predictor(data_plane.manager, FeatureAssembler(data_plane.reader), lambda: plans, log)
    client = redis.Redis.from_url(own_redis.url)
    client.config_resetstat()
    for deployment in ("a", "b"):
        await predictor.predict(PredictCall(deployment, "", [{"driver_id": "7"}], [], deployment))
        await asyncio.gather(*predictor._shadow_tasks)
    assert cast(dict[str, dict[str, int]], client.info("commandstats"))["cmdstat_mget"]["calls"] == 2
    async with asyncio.timeout(5):
        while log.written < 4:  # noqa: ASYNC110 (the log's own counter; no event to wait on)
            await asyncio.sleep(0.01)
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange("aether:predictions"))
    shadows = {f[b"deployment"]: f for _, f in entries if f[b"role"] == b"shadow"}
    assert {d: f[b"error_code"] for d, f in shadows.items()} == {b"a": b"OK", b"b": b"OK"}
    fed = {d: np.frombuffer(f[b"output:y"], np.float32) for d, f in shadows.items()}
    np.testing.assert_array_equal(fed[b"a"], _with(float("nan")))  # imputing shadow: NaN, not 0
    np.testing.assert_array_equal(fed[b"b"], _with(0.0))  # strict shadow: 0, not NaN


@pytest.mark.parametrize("stored", [float("inf"), float("nan")])
async def test_a_non_finite_stored_value_a_strict_model_refuses_is_the_stores_not_the_callers(
    own_redis: RedisServer, stub: pb_grpc.InferenceStub, stored: float
) -> None:
    """A plain float feature may hold inf (ingestion rejects it only where a rule says so), and a writer may
    store NaN as a value. Fed to a model that refuses non-finite input, Predict answered INVALID_ARGUMENT
    "input 'input' holds NaN or infinite values", blaming a caller who sent nothing but an entity id, and
    naming neither the feature nor the entity. It is the stored data that does not fit this model, as with
    a finite value too large for the input: FAILED_PRECONDITION naming both."""
    row = np.arange(8, dtype=np.float32)
    row[3] = stored
    OnlineWriter(redis.Redis.from_url(own_redis.url)).write(
        writable(FEATURES), [["5"]], row[np.newaxis], NOW_US
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Predict(build_predict_request("scorer", [{"driver_id": 1}, {"driver_id": 5}]), timeout=5)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION, info.value.details()
    details = info.value.details() or ""
    assert "row 1: stored feature driver_stats@1:f3 of entity {'driver_id': '5'}" in details
    assert "does not take NaN or infinite values" in details
    # Entities whose stored values are finite are served as before.
    assert len(decode_predict_response(
        await stub.Predict(build_predict_request("scorer", [{"driver_id": 1}]), timeout=5)
    ).outputs["output"]) == 1  # fmt: skip


@pytest.mark.usefixtures("driver_7_with_a_null")
async def test_deployments_sharing_a_version_each_validate_as_their_own_config_says(
    data_plane: DataPlaneHandle, tmp_path: Path
) -> None:
    """The data plane holds one spec per version, so two deployments of one version with different serving
    configs share its batching; but whether a NaN may reach the model is each deployment's own choice, and
    its feature fill follows that choice. A deployment that takes non-finite values filled the null with
    NaN, which the version's validator (built from the other, strict deployment's config) refused:
    INVALID_ARGUMENT for a request that its own deployment allows."""
    identity = onnx_models.tiled(8, 1)
    strict = onnx_models.save(identity, tmp_path / "shared.onnx", "shared", feature_refs=("driver_stats",))
    lenient = dataclasses.replace(strict, allow_non_finite=True)
    await data_plane.manager.ensure_loaded(strict)

    def plan(name: str, spec: ModelSpec) -> DeploymentPlan:
        variants = (Variant("blue", PlanRole.PRIMARY, 100.0, spec),)
        return DeploymentPlan(deployment=name, plan_revision=1, routing_salt=name, variants=variants)

    plans = DeploymentPlans(
        revision=1, plans={"lenient": plan("lenient", lenient), "strict": plan("strict", strict)}
    )
    predictor = Predictor(
        data_plane.manager, FeatureAssembler(data_plane.reader), lambda: plans, data_plane.prediction_log
    )
    served = await predictor.predict(PredictCall("lenient", "", [{"driver_id": "7"}], [], "r1"))
    np.testing.assert_array_equal(served.outputs["y"][0], _with(float("nan")))
    # The strict deployment still gets its own fill (0), and still refuses what it refused before.
    served = await predictor.predict(PredictCall("strict", "", [{"driver_id": "7"}], [], "r2"))
    np.testing.assert_array_equal(served.outputs["y"][0], _with(0.0))
    # The other way round: the version's spec is now the lenient one; the strict deployment is unchanged.
    await data_plane.manager.ensure_loaded(lenient)
    served = await predictor.predict(PredictCall("strict", "", [{"driver_id": "7"}], [], "r3"))
    np.testing.assert_array_equal(served.outputs["y"][0], _with(0.0))
    served = await predictor.predict(PredictCall("lenient", "", [{"driver_id": "7"}], [], "r4"))
    np.testing.assert_array_equal(served.outputs["y"][0], _with(float("nan")))


@pytest.fixture
def driver_9_all_null(own_redis: RedisServer, data_plane: DataPlaneHandle) -> None:
    """Driver 9 is stored, every feature null: a real writer's blob (its event time, its null bitmap)."""
    OnlineWriter(redis.Redis.from_url(own_redis.url)).write(
        writable(FEATURES), [["9"]], np.zeros((1, 8), np.float32), NOW_US, nulls=np.ones((1, 8), bool)
    )


@pytest.mark.usefixtures("driver_9_all_null")
@pytest.mark.parametrize("rows", [[{"driver_id": 9}], [{"driver_id": 1}, {"driver_id": 9}]])
async def test_an_entity_stored_with_every_feature_null_is_not_an_unknown_entity(
    data_plane: DataPlaneHandle, stub: pb_grpc.InferenceStub, tmp_path: Path, rows: list[dict[str, int]]
) -> None:
    """An entity whose blob holds only nulls was taken for one with no stored features: the 'error' policy
    refused it NOT_FOUND ("has no stored features"), and the 'defaults' policy reported it as a fallback.
    The entity exists (its key, its event time); its values are null, and each null is filled as any other
    missing value is (the deployment's feature_defaults here), counted as missing, with no fallback."""
    spec = onnx_models.save(
        onnx_models.mlp(input_size=8, hidden=(4,), seed=3), tmp_path / "strict.onnx", "strict",
        feature_refs=("driver_stats",), feature_defaults=DEFAULTS,
    )  # fmt: skip  # the 'error' policy
    await load_as_static(data_plane, spec)
    result = decode_predict_response(await stub.Predict(build_predict_request("strict", rows), timeout=5))
    assert result.missing_features[-1] == 8 and result.used_defaults[-1] is False
    expected = _run_model(spec, np.asarray(DEFAULTS, np.float32)[np.newaxis, :])
    np.testing.assert_allclose(result.outputs["output"][-1:], expected, rtol=1e-5)
    # An entity with no key at all is still refused under 'error', and is a fallback under 'defaults'.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Predict(build_predict_request("strict", [{"driver_id": 3}]), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    lenient = decode_predict_response(
        await stub.Predict(build_predict_request("lenient", [{"driver_id": 9}, {"driver_id": 3}]), timeout=5)
    )
    assert lenient.used_defaults == (False, True) and lenient.missing_features == (8, 8)
