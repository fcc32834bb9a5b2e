"""What a missing stored feature (a null in the blob, or no key at all) becomes in Predict's model input,
over a real data plane and redis-server: NaN for a model that imputes missing values itself (the built-in
trainer's models were trained with missing = NaN and impute the training mean in the graph; a 0 is a value
they never saw there), and the deployment's ``feature_defaults``, when set, for every missing value."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import numpy as np
import onnxruntime as ort
import pytest
import redis

from clients.aether.v1 import inference_pb2_grpc as pb_grpc
from clients.sdk.inference import build_predict_request, decode_predict_response
from control_plane.features.online_writer import OnlineWriter
from data_plane.models.spec import ModelSpec
from data_plane.server import DataPlaneHandle
from tests.integration.serving.conftest import DEFAULTS, FEATURES, NOW_US, STORED
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
    await data_plane.manager.ensure_loaded(spec)
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
    await data_plane.manager.ensure_loaded(spec)
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
    await data_plane.manager.ensure_loaded(imputing)
    chosen = decode_predict_response(
        await stub.Predict(build_predict_request("imputing", [{"driver_id": 7}]), timeout=5)
    )
    expected = _run_model(imputing, _with(DEFAULTS[NULL_COLUMN])[np.newaxis, :])
    np.testing.assert_allclose(chosen.outputs["output"], expected, rtol=1e-5)
