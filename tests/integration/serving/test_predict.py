"""``aether.v1.Inference/Predict`` over a real data plane: the online feature fetch, request-time features,
the fallback for entities without features, PredictBatch, Redis outages, the prediction log, and routing
through a persisted deployment plan with a shadow variant."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import grpc
import grpc.aio
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import redis

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import inference_pb2 as pb
from clients.aether.v1 import inference_pb2_grpc as pb_grpc
from clients.aether.v1 import model_registry_pb2 as mpb
from clients.errors import MAX_STATUS_MESSAGE_BYTES
from clients.inference import grpc_predict_v2_pb2 as oip
from clients.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from clients.sdk.inference import build_infer_request, build_predict_request, decode_predict_response
from clients.serving_rules import REQUEST_ID_LENGTH
from control_plane.features.online_writer import OnlineWriter
from control_plane.monitoring.entries import decode_entry
from data_plane.api import predict
from data_plane.deployment_plan import DeploymentPlan, DeploymentPlans, Variant
from data_plane.deployment_plan import Role as PlanRole
from data_plane.deployment_watch import plans_path
from data_plane.feature_vector import FeatureAssembler
from data_plane.metrics import ServingMetrics
from data_plane.models.manager import ModelManager
from data_plane.models.options import ManagerOptions
from data_plane.models.spec import ModelSpec, TensorSpec, load_model_config
from data_plane.models.version import ModelState
from data_plane.predictor import PredictCall, Prediction, Predictor
from data_plane.registry_watch import save_snapshot
from data_plane.server import DataPlaneHandle, start_server
from tests.integration.serving.conftest import (
    DEFAULTS,
    FEATURES,
    NOW_US,
    STORED,
    load_as_static,
    model_specs,
    serving_settings,
)
from tests.support import onnx_models
from tests.support.redis_server import RedisServer
from tests.unit.data_plane.registry_builders import writable

pytestmark = pytest.mark.integration


@pytest.fixture
async def stub(data_plane: DataPlaneHandle) -> AsyncIterator[pb_grpc.InferenceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{data_plane.port}") as channel:
        yield pb_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]


def _run_model(spec: ModelSpec, features: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(Path(spec.artifact_uri).read_bytes())
    return np.asarray(session.run(None, {spec.inputs[0].name: features.astype(np.float32)})[0])


def _spec(handle: DataPlaneHandle, name: str, version: int) -> ModelSpec:
    return handle.manager.resolve(name, version)


async def test_predict_fetches_the_models_features_and_names_the_version(
    data_plane: DataPlaneHandle, stub: pb_grpc.InferenceStub
) -> None:
    request = build_predict_request("scorer", [{"driver_id": 2}, {"driver_id": "1"}], request_id="req-7")
    result = decode_predict_response(await stub.Predict(request, timeout=5))
    assert (result.model_name, result.model_version, result.variant, result.request_id) == (
        "scorer",
        2,
        "static",
        "req-7",
    )
    expected = _run_model(_spec(data_plane, "scorer", 2), np.stack([STORED[2], STORED[1]]))
    np.testing.assert_allclose(result.outputs["output"], expected, rtol=1e-5)
    assert result.used_defaults == (False, False) and result.missing_features == (0, 0)


async def test_request_time_features_merge_in_reference_order(
    data_plane: DataPlaneHandle, stub: pb_grpc.InferenceStub
) -> None:
    request = build_predict_request(
        "mixed", [{"driver_id": 1}, {"driver_id": 2}], request_features=[{"hour": 13.0}, {"hour": 2.0}]
    )
    result = decode_predict_response(await stub.Predict(request, timeout=5))
    # References: driver_stats:f7, request:hour, driver_stats:f0.
    inputs = np.array([[STORED[1][7], 13.0, STORED[1][0]], [STORED[2][7], 2.0, STORED[2][0]]])
    np.testing.assert_allclose(
        result.outputs["output"], _run_model(_spec(data_plane, "mixed", 1), inputs), rtol=1e-5
    )
    missing_hour = build_predict_request("mixed", [{"driver_id": 1}])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Predict(missing_hour, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "'hour'" in (info.value.details() or "")


async def test_a_non_finite_request_time_value_for_a_strict_model_is_refused_naming_row_and_feature(
    data_plane: DataPlaneHandle, stub: pb_grpc.InferenceStub
) -> None:
    """ "mixed" refuses non-finite input (allow_non_finite off). A NaN or inf request-time value reached its
    input check, whose answer named neither the row nor the feature: "input 'input' holds NaN or infinite
    values". The caller is told which of its values it was, as for one too large for the input."""
    rows = [{"driver_id": 1}, {"driver_id": 2}]
    for value in (math.nan, math.inf, -math.inf):
        request = build_predict_request("mixed", rows, request_features=[{"hour": 1.0}, {"hour": value}])
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Predict(request, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (info.value.details() or "").startswith(
            f"row 1: request-time feature 'hour' is {value!r}; the model's float32 input does not take NaN "
            "or infinite values"
        ), info.value.details()
    # An override of a stored feature too ("mixed" reads driver_stats:f7 on its own).
    request = build_predict_request(
        "mixed", rows[:1], request_features=[{"hour": 1.0, "driver_stats:f7": math.nan}]
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Predict(request, timeout=5)
    assert (info.value.details() or "").startswith("row 0: request-time feature 'driver_stats:f7' is nan")


async def test_a_request_time_feature_the_model_does_not_read_is_refused_naming_it(
    data_plane: DataPlaneHandle, stub: pb_grpc.InferenceStub
) -> None:
    # Dropped, each was answered OK with the stored values as if it had applied. "mixed" reads
    # driver_stats:f7, request:hour, driver_stats:f0; "scorer" reads the whole view driver_stats.
    cases = [
        ("mixed", {"hour": 3.0, "driver_stats:f_7": 100.0}, "driver_stats:f_7"),  # a typo
        ("mixed", {"hour": 3.0, "hourr": 100.0}, "hourr"),  # an unknown name
        ("mixed", {"hour": 3.0, "request:hour": 5.0}, "request:hour"),  # the reference, not its name
        ("scorer", {"driver_stats:f0": 1e6}, "driver_stats:f0"),  # read through a whole-view reference
        ("scorer", {"request:hour": 5.0}, "request:hour"),
    ]
    for model, features, unknown in cases:
        request = build_predict_request(model, [{"driver_id": 1}], request_features=[features])
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Predict(request, timeout=5)
        details = info.value.details() or ""
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (model, features, details)
        assert f"request-time feature {unknown!r}" in details, details
        if model == "mixed":
            assert "accepted: 'driver_stats:f0', 'driver_stats:f7', 'hour'" in details, details
        else:
            assert "accepted: none" in details, details
    # The names it reads still apply: an override of a single-feature reference, and a request: name.
    request = build_predict_request(
        "mixed", [{"driver_id": 1}], request_features=[{"hour": 3.0, "driver_stats:f7": 100.0}]
    )
    result = decode_predict_response(await stub.Predict(request, timeout=5))
    inputs = np.array([[100.0, 3.0, STORED[1][0]]])
    np.testing.assert_allclose(
        result.outputs["output"], _run_model(_spec(data_plane, "mixed", 1), inputs), rtol=1e-5
    )


async def test_predict_on_a_model_that_reads_no_features_says_so(
    data_plane: DataPlaneHandle, stub: pb_grpc.InferenceStub
) -> None:
    """ "affine" lists no feature references: Predict built a [1, 0] matrix and answered that input 'x' has
    shape [1, 0], an input the caller never sent. It is the model that Predict cannot feed, not the
    request that is wrong: FAILED_PRECONDITION (it was INVALID_ARGUMENT, blaming the caller)."""
    for _ in range(2):  # the refusal is never cached as a layout
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Predict(build_predict_request("affine", [{"driver_id": 1}]), timeout=5)
        details = info.value.details() or ""
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION, details
        assert "model affine v1 reads no features" in details and "ModelInfer" in details, details
        assert "shape [1, 0]" not in details


async def test_predict_on_a_model_whose_references_do_not_fill_its_input_blames_the_model(
    data_plane: DataPlaneHandle, stub: pb_grpc.InferenceStub, tmp_path: Path
) -> None:
    """ "narrow" takes 4 features per row but reads the whole 8-feature driver_stats view: Predict built an
    [1, 8] matrix and answered INVALID_ARGUMENT "input 'input' has shape [1, 8]", an input the caller never
    sent, so no request could succeed and its caller was told to fix its own. FAILED_PRECONDITION naming
    the model, what its references read and what its input takes; every request, not only the first (the
    refusal is never cached as a layout)."""
    spec = onnx_models.save(
        onnx_models.mlp(input_size=4, hidden=(4,)), tmp_path / "narrow.onnx", "narrow",
        feature_refs=("driver_stats",),
    )  # fmt: skip
    await load_as_static(data_plane, spec)
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Predict(build_predict_request("narrow", [{"driver_id": 1}]), timeout=5)
        details = info.value.details() or ""
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION, details
        assert details == (
            "model narrow v1 reads 8 features per row (feature references 'driver_stats'), but its input "
            "takes 4 (inputs (input: float32[-1, 4])): its feature references and its signature must agree"
        ), details


async def test_predict_on_a_model_it_cannot_feed_is_a_failed_precondition_not_the_callers_mistake(
    data_plane: DataPlaneHandle, stub: pb_grpc.InferenceStub, own_redis: RedisServer
) -> None:
    """ "two_inputs" has two inputs, not the one [batch, features] input Predict builds: every request to it
    fails whatever it holds, so the answer is FAILED_PRECONDITION naming the model, its signature and
    ModelInfer (it was INVALID_ARGUMENT, telling the caller its well-formed request was malformed). Under
    PredictBatch the request's own result says the same; the prediction log and the metrics name the
    same status, so the canary controller counts it as the version's failure. A malformed request to a
    model Predict can feed is still INVALID_ARGUMENT."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Predict(build_predict_request("two_inputs", [{"driver_id": 1}]), timeout=5)
    details = info.value.details() or ""
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION, details
    assert details.startswith("model two_inputs v1 cannot serve Predict: it needs exactly one input"), details
    assert "(x: float32[-1, 3]; k: int64[-1, 1])" in details and "ModelInfer" in details, details
    batch = pb.PredictBatchRequest(
        requests=[
            build_predict_request("two_inputs", [{"driver_id": 1}]),
            build_predict_request("scorer", [{"driver_id": 1}]),
            pb.PredictRequest(deployment="scorer"),  # no rows: the caller's mistake
        ]
    )
    response = await stub.PredictBatch(batch, timeout=5)
    assert [r.code for r in response.results] == [
        grpc.StatusCode.FAILED_PRECONDITION.value[0],
        0,
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
    ], [r.message for r in response.results]
    assert response.results[0].message == details
    assert response.results[2].message == "the request has no rows"
    entries = await _stream_entries(own_redis.url, "aether:predictions", 4)
    logged = sorted((e[b"model"].decode(), e[b"error_code"].decode()) for e in entries)
    assert logged == [
        ("scorer", "INVALID_ARGUMENT"),
        ("scorer", "OK"),
        ("two_inputs", "FAILED_PRECONDITION"),
        ("two_inputs", "FAILED_PRECONDITION"),
    ], logged
    labels = {"api": "Predict", "model": "two_inputs", "version": "", "code": "FAILED_PRECONDITION"}
    assert data_plane.metrics.registry.get_sample_value("aether_inference_requests_total", labels) == 2


async def test_request_time_features_of_an_integer_input_must_be_whole_numbers_it_holds(
    data_plane: DataPlaneHandle, stub: pb_grpc.InferenceStub, tmp_path: Path
) -> None:
    spec = onnx_models.save(
        onnx_models.integer_input(2), tmp_path / "counts.onnx", "counts",
        feature_refs=("request:hour", "request:day"),
    )  # fmt: skip
    await load_as_static(data_plane, spec)
    row = [{"driver_id": 1}]
    good = build_predict_request("counts", row, request_features=[{"hour": 13.0, "day": 2.0}])
    result = decode_predict_response(await stub.Predict(good, timeout=5))
    assert result.outputs["y"].tolist() == [[13.0, 2.0]]
    # numpy's assignment raised on NaN and infinities (INTERNAL) and wrapped or truncated the rest.
    for hour in (math.nan, math.inf, -math.inf, 1e30, 2.5, -(2.0**64)):
        bad = build_predict_request("counts", row, request_features=[{"hour": hour, "day": 2.0}])
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Predict(bad, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        assert "request-time feature 'hour'" in (info.value.details() or "")
        assert "int64 input takes whole numbers" in (info.value.details() or "")
    refused = data_plane.metrics.registry.get_sample_value(
        "aether_inference_requests_total",
        {"api": "Predict", "model": "counts", "version": "", "code": "INVALID_ARGUMENT"},
    )
    assert refused == 6


async def _counted(handle: DataPlaneHandle, labels: dict[str, str], expected: float) -> None:
    """Waits for the server's count (a handler gRPC cancels finishes a moment after its client hears)."""
    value = None
    for _ in range(200):
        value = handle.metrics.registry.get_sample_value("aether_inference_requests_total", labels)
        if value == expected:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"counted {value} for {labels}, expected {expected}")


SLOW_WIDTH = 1024


async def test_a_predict_ended_by_its_deadline_or_its_caller_is_counted_as_the_caller_saw_it(
    data_plane: DataPlaneHandle, own_redis: RedisServer, stub: pb_grpc.InferenceStub, tmp_path: Path
) -> None:
    spec = onnx_models.save(
        onnx_models.slow_at_least(0.2, SLOW_WIDTH), tmp_path / "slow.onnx", "slow",
        feature_refs=tuple(f"request:f{i}" for i in range(SLOW_WIDTH)), warmup_requests=1, max_batch_size=1,
    )  # fmt: skip
    await load_as_static(data_plane, spec)  # a request takes ≥ 0.2 s, in a worker thread
    features = [{f"f{i}": 0.0 for i in range(SLOW_WIDTH)}]
    request = build_predict_request("slow", [{"driver_id": 1}], request_features=features, request_id="late")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Predict(request, timeout=0.05)  # passes while the model runs: gRPC cancels the handler
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    labels = {"api": "Predict", "model": "slow", "version": ""}
    await _counted(data_plane, {**labels, "code": "DEADLINE_EXCEEDED"}, 1)

    gate = data_plane.admissions[0]  # Predict's
    request.request_id = "gone"
    call = stub.Predict(request, timeout=30)
    for _ in range(500):  # cancel once the server holds the call
        if gate.in_flight:
            break
        await asyncio.sleep(0.002)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await _counted(data_plane, {**labels, "code": "CANCELLED"}, 1)
    # The prediction log (the canary controller's evidence, where CANCELLED is the caller's doing) names
    # them as the metrics do: a model that times out once logged CANCELLED and never counted as failing.
    entries = await _stream_entries(own_redis.url, "aether:predictions", 2)
    logged = {e[b"request_id"]: (e[b"ok"], e[b"error_code"]) for e in entries}
    assert logged == {b"late": (b"0", b"DEADLINE_EXCEEDED"), b"gone": (b"0", b"CANCELLED")}


async def test_a_model_of_request_time_features_only_is_held_to_the_row_limit_too(
    data_plane: DataPlaneHandle, stub: pb_grpc.InferenceStub, tmp_path: Path
) -> None:
    """The row limit was checked by the online read alone: a model reading no stored feature took any
    number of rows, bounded only by the message size."""
    spec = onnx_models.save(
        onnx_models.tiled(1, 1), tmp_path / "hourly.onnx", "hourly", feature_refs=("request:hour",)
    )
    await load_as_static(data_plane, spec)
    limit = data_plane.reader.limits.max_rows
    rows = [{"driver_id": i} for i in range(limit + 1)]
    request = build_predict_request("hourly", rows, request_features=[{"hour": 1.0}] * len(rows))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Predict(request, timeout=5)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"the limit is {limit} per request" in (refused.value.details() or "")
    at_limit = build_predict_request("hourly", rows[:limit], request_features=[{"hour": 1.0}] * limit)
    assert len(decode_predict_response(await stub.Predict(at_limit, timeout=5)).outputs["y"]) == limit


async def test_a_predict_answer_too_large_for_a_message_is_refused_and_counted_so(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    handle = await start_server(serving_settings(tmp_path, own_redis.url, max_message_bytes=4096))
    try:
        spec = onnx_models.save(
            onnx_models.tiled(1, 2048), tmp_path / "tiled.onnx", "tiled", feature_refs=("request:hour",)
        )
        await load_as_static(handle, spec)
        request = build_predict_request("tiled", [{"driver_id": 1}], request_features=[{"hour": 1.0}])
        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            stub = pb_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.aio.AioRpcError) as info:  # an 8 kB answer to a request of a few bytes
                await stub.Predict(request, timeout=5)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "bytes, more than the 4096" in (info.value.details() or ""), info.value.details()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.PredictBatch(pb.PredictBatchRequest(requests=[request]), timeout=5)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "bytes, more than the 4096" in (info.value.details() or ""), info.value.details()
        counted = {
            code: handle.metrics.registry.get_sample_value(
                "aether_inference_requests_total",
                {"api": "Predict", "model": "tiled", "version": "1", "code": code},
            )
            for code in ("OK", "RESOURCE_EXHAUSTED")
        }
        assert counted == {"OK": None, "RESOURCE_EXHAUSTED": 2.0}
    finally:
        await handle.stop(None)


class _FakeBrokenPredictor(Predictor):
    """A fake: a bug inside Predict (an exception that is not an AetherError). The known ways to cause one
    through the real predictor are fixed, so it is raised here."""

    async def predict(self, call: PredictCall) -> Prediction:
        raise RuntimeError(f"a bug while serving {call.deployment}")


async def test_a_predict_failed_by_a_bug_is_internal_and_counted(data_plane: DataPlaneHandle) -> None:
    metrics = ServingMetrics()
    static = data_plane.deployments.static_models()
    broken = _FakeBrokenPredictor(data_plane.manager, FeatureAssembler(None), static=static)
    server = grpc.aio.server()
    predict.add_to_server(predict.PredictServicer(broken, metrics), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Predict(build_predict_request("scorer", [{"driver_id": 1}]), timeout=5)
            assert info.value.code() == grpc.StatusCode.INTERNAL
            assert "a bug while serving scorer" in (info.value.details() or "")
            batch = pb.PredictBatchRequest(requests=[build_predict_request("scorer", [{"driver_id": 1}])])
            (result,) = (await stub.PredictBatch(batch, timeout=5)).results
            assert result.code == grpc.StatusCode.INTERNAL.value[0]
    finally:
        await server.stop(None)
    # "scorer" is served (a model of the static config): its failures are counted under its name.
    labels = {"api": "Predict", "model": "scorer", "version": "", "code": "INTERNAL"}
    assert metrics.registry.get_sample_value("aether_inference_requests_total", labels) == 2


async def test_predicts_naming_no_deployment_share_one_series(
    data_plane: DataPlaneHandle, stub: pb_grpc.InferenceStub
) -> None:
    """Each unknown deployment name used to become a series of its own, kept for ever: /metrics and
    memory grew with every distinct bad request."""
    for name in [f"ghost-{i}" for i in range(5)] + ["d" * 500]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Predict(build_predict_request(name, [{"driver_id": 1}]), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    registry = data_plane.metrics.registry
    labels = {"api": "Predict", "model": "", "version": "", "code": "NOT_FOUND"}
    assert registry.get_sample_value("aether_inference_requests_total", labels) == 6
    families = {f.name: f for f in registry.collect()}
    assert {s.labels["model"] for s in families["aether_inference_requests"].samples} == {""}


async def test_a_predict_that_does_not_parse_is_invalid_and_counted(data_plane: DataPlaneHandle) -> None:
    """gRPC's own deserializer answered UNKNOWN with a Python exception's text, and nothing counted it. A
    PredictBatch that does not parse was then answered INVALID_ARGUMENT but still not counted: it counts
    once (its requests unknown)."""
    good = build_predict_request("scorer", [{"driver_id": 1}], request_id="ab").SerializeToString()
    bad_utf8 = good.replace(b"ab", b"\xff\xfe")  # the request id: invalid UTF-8
    assert bad_utf8 != good
    async with grpc.aio.insecure_channel(f"127.0.0.1:{data_plane.port}") as channel:
        call = channel.unary_unary("/aether.v1.Inference/Predict")  # bytes in and out
        assert pb.PredictResponse.FromString(await call(good, timeout=5)).request_id == "ab"
        for payload in (bad_utf8, good[:-3]):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(payload, timeout=5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
            assert "request is not a valid PredictRequest" in (info.value.details() or "")
        batch = channel.unary_unary("/aether.v1.Inference/PredictBatch")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await batch(b"\x0a\x05ab", timeout=5)  # a request 5 bytes long, 2 of them sent
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "request is not a valid PredictBatchRequest" in (info.value.details() or "")
    labels = {"api": "Predict", "model": "", "version": "", "code": "INVALID_ARGUMENT"}
    assert data_plane.metrics.registry.get_sample_value("aether_inference_requests_total", labels) == 3


async def test_a_predict_refused_by_the_drain_is_counted(
    data_plane: DataPlaneHandle, stub: pb_grpc.InferenceStub
) -> None:
    """The drain gate's refusal came before Predict's counting, so a draining replica's /metrics did not
    show the calls it turned away (ModelInfer counted its own); PredictBatch's went uncounted too, and so
    did a batch over the request limit. A batch counts one per request, as when it is answered."""
    registry = data_plane.metrics.registry
    request = build_predict_request("scorer", [{"driver_id": 1}])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.PredictBatch(pb.PredictBatchRequest(requests=[request] * 1001), timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    labels = {"api": "Predict", "model": "", "version": "", "code": "RESOURCE_EXHAUSTED"}
    assert registry.get_sample_value("aether_inference_requests_total", labels) == 1001  # not looked into

    predict_gate, _ = data_plane.admissions
    assert await predict_gate.drain(timeout_s=1.0)  # nothing in flight: closed at once
    for name in ("scorer", "ghost"):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Predict(build_predict_request(name, [{"driver_id": 1}]), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in (info.value.details() or "")
    ghost = build_predict_request("ghost", [{"driver_id": 1}])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.PredictBatch(pb.PredictBatchRequest(requests=[request, ghost, request]), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    for model, count in (("scorer", 3), ("", 2)):  # a name nothing serves is counted under no name
        labels = {"api": "Predict", "model": model, "version": "", "code": "UNAVAILABLE"}
        assert registry.get_sample_value("aether_inference_requests_total", labels) == count


async def test_an_entity_without_features_gets_the_deployments_fallback(
    data_plane: DataPlaneHandle, stub: pb_grpc.InferenceStub
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Predict(build_predict_request("scorer", [{"driver_id": 1}, {"driver_id": 3}]), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "row 1" in (info.value.details() or "") and "'driver_id': '3'" in (info.value.details() or "")

    lenient = decode_predict_response(
        await stub.Predict(build_predict_request("lenient", [{"driver_id": 1}, {"driver_id": 3}]), timeout=5)
    )
    assert lenient.used_defaults == (False, True) and lenient.missing_features == (0, 8)
    expected = _run_model(_spec(data_plane, "lenient", 1), np.stack([STORED[1], np.asarray(DEFAULTS)]))
    np.testing.assert_allclose(lenient.outputs["output"], expected, rtol=1e-5)


async def test_predict_batch_answers_each_request_on_its_own(stub: pb_grpc.InferenceStub) -> None:
    batch = pb.PredictBatchRequest(
        requests=[
            build_predict_request("scorer", [{"driver_id": 1}]),
            build_predict_request("scorer", [{"driver_id": 3}]),
            build_predict_request("nowhere", [{"driver_id": 1}]),
        ]
    )
    response = await stub.PredictBatch(batch, timeout=5)
    codes = [grpc.StatusCode.OK.value[0] if r.code == 0 else r.code for r in response.results]
    assert codes == [0, grpc.StatusCode.NOT_FOUND.value[0], grpc.StatusCode.NOT_FOUND.value[0]]
    assert response.results[0].response.model_name == "scorer"
    assert "deployment 'nowhere' does not exist" in response.results[2].message


async def test_with_redis_down_predict_fails_fast_and_model_infer_keeps_serving(
    data_plane: DataPlaneHandle, own_redis: RedisServer, stub: pb_grpc.InferenceStub
) -> None:
    own_redis.close()
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Predict(build_predict_request("scorer", [{"driver_id": 1}]), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - started < 1.0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{data_plane.port}") as channel:
        oip = oip_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        response = await oip.ModelInfer(
            build_infer_request("affine", {"x": np.ones((1, 4), np.float32)}), timeout=5
        )
    assert response.model_name == "affine"


async def _stream_entries(url: str, stream: str, count: int) -> list[dict[bytes, bytes]]:
    client = redis.Redis.from_url(url)
    entries: list[tuple[bytes, dict[bytes, bytes]]] = []
    try:
        for _ in range(200):
            entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(stream))
            if len(entries) >= count:
                return [fields for _, fields in entries]
            await asyncio.sleep(0.01)
        raise AssertionError(f"the prediction log holds {len(entries)} entries, expected {count}")
    finally:
        client.close()


async def test_sampled_predictions_reach_the_redis_stream(
    data_plane: DataPlaneHandle, own_redis: RedisServer, stub: pb_grpc.InferenceStub
) -> None:
    await stub.Predict(build_predict_request("scorer", [{"driver_id": 2}], request_id="logged-1"), timeout=5)
    (entry,) = await _stream_entries(own_redis.url, "aether:predictions", 1)
    assert entry[b"request_id"] == b"logged-1" and entry[b"model"] == b"scorer" and entry[b"version"] == b"2"
    assert entry[b"variant"] == b"static" and entry[b"entities"] == b'[{"driver_id":"2"}]'
    np.testing.assert_array_equal(np.frombuffer(entry[b"features"], np.float32), STORED[2])
    assert entry[b"features_shape"] == b"1,8" and b"output:output" in entry


async def test_a_request_id_monitoring_cannot_store_is_refused(
    data_plane: DataPlaneHandle, own_redis: RedisServer, stub: pb_grpc.InferenceStub
) -> None:
    """Predict answered OK for an id over 128 characters or holding NUL; the monitor then skipped the whole
    prediction-log entry (features included) and feedback for that id was refused: the prediction vanished
    from drift and quality. Such ids are refused up front, by the rule the monitor's columns keep to."""
    longest = "r" * REQUEST_ID_LENGTH
    for bad, reason in (
        (longest + "r", f"request_id has {REQUEST_ID_LENGTH + 1} characters; at most {REQUEST_ID_LENGTH}"),
        ("req\x00-1", r"request_id holds a NUL character \(0x00\) at position 3"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Predict(build_predict_request("scorer", [{"driver_id": 2}], request_id=bad), timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert re.match(reason, info.value.details() or ""), info.value.details()
    batch = pb.PredictBatchRequest(
        requests=[
            build_predict_request("scorer", [{"driver_id": 1}], request_id=longest),
            build_predict_request("scorer", [{"driver_id": 1}], request_id=longest + "r"),
        ]
    )
    response = await stub.PredictBatch(batch, timeout=5)
    assert [r.code for r in response.results] == [0, grpc.StatusCode.INVALID_ARGUMENT.value[0]]
    assert response.results[0].response.request_id == longest
    # Only the answered prediction is logged, and the monitor takes its entry.
    (entry,) = await _stream_entries(own_redis.url, "aether:predictions", 1)
    logged = decode_entry(entry)
    assert logged is not None and logged.request_id == longest


async def test_a_refusal_naming_a_huge_input_keeps_its_status(
    data_plane: DataPlaneHandle, stub: pb_grpc.InferenceStub
) -> None:
    """Messages echo the names asked for: at 20,000 characters gRPC dropped the status for its size and
    the caller got RESOURCE_EXHAUSTED "Stream removed" instead of NOT_FOUND, on Predict (mapped by
    ``maps_errors``) and on ModelInfer (which aborts by itself). Both are cut to the same size now."""
    name = "x" * 20_000
    async with grpc.aio.insecure_channel(f"127.0.0.1:{data_plane.port}") as channel:
        oip = oip_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        for call in (
            stub.Predict(build_predict_request(name, [{"driver_id": 1}]), timeout=5),
            oip.ModelInfer(build_infer_request(name, {"x": np.ones((1, 4), np.float32)}), timeout=5),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            details = info.value.details() or ""
            assert info.value.code() == grpc.StatusCode.NOT_FOUND, details[:200]
            assert "'xxx" in details and len(details) <= MAX_STATUS_MESSAGE_BYTES
            assert re.search(r"\.\.\. \[\d+ more characters cut\]$", details)


def _planned(spec: ModelSpec, name: str, role: int, percent: float) -> dpb.PlannedVariant:
    def tensors(specs: tuple[TensorSpec, ...]) -> list[mpb.TensorSpec]:
        return [mpb.TensorSpec(name=t.name, dtype=t.dtype, shape=t.shape) for t in specs]

    model = dpb.ModelServingSpec(
        model_name=spec.name, version=spec.version, artifact_sha256=spec.artifact_sha256,
        artifact_uri=spec.artifact_uri, inputs=tensors(spec.inputs), outputs=tensors(spec.outputs),
        feature_refs=spec.feature_refs, serving=dpb.ServingConfig(warmup_requests=1),
    )  # fmt: skip
    return dpb.PlannedVariant(name=name, role=role, traffic_percent=percent, model=model)  # type: ignore[arg-type]


async def test_a_deployment_plan_routes_predict_and_mirrors_to_its_shadow(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    writer = OnlineWriter(redis.Redis.from_url(own_redis.url))
    writer.write(writable(FEATURES), [["1"]], STORED[1][np.newaxis, :], NOW_US)
    settings = serving_settings(tmp_path, own_redis.url)
    assert settings.model_config is not None
    specs = {(s.name, s.version): s for s in load_model_config(settings.model_config)}
    plan = dpb.DeploymentPlan(
        deployment="ranking", plan_revision=1, routing_salt="ranking",
        variants=[
            _planned(specs["scorer", 1], "blue", dpb.VARIANT_ROLE_PRIMARY, 100.0),
            _planned(specs["scorer", 2], "green-shadow", dpb.VARIANT_ROLE_SHADOW, 100.0),
        ],
    )  # fmt: skip
    save_snapshot(
        plans_path(settings), dpb.DeploymentPlanSnapshot(revision=1, plans=[plan]).SerializeToString()
    )
    handle = await start_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            stub = pb_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]
            request = build_predict_request(
                "ranking", [{"driver_id": 1}], routing_key="user-9", request_id="r-ab"
            )
            result = decode_predict_response(await stub.Predict(request, timeout=5))
        assert (result.model_name, result.model_version, result.variant) == ("scorer", 1, "blue")
        entries = await _stream_entries(own_redis.url, "aether:predictions", 2)
        by_role = {e[b"role"]: e for e in entries}
        assert {e[b"request_id"] for e in entries} == {b"r-ab"}
        assert by_role[b"served"][b"variant"] == b"blue" and by_role[b"shadow"][b"variant"] == b"green-shadow"
        shadow_out = np.frombuffer(by_role[b"shadow"][b"output:output"], np.float32)
        np.testing.assert_allclose(
            shadow_out, _run_model(specs["scorer", 2], STORED[1][np.newaxis, :]).ravel(), rtol=1e-5
        )
    finally:
        await handle.stop(None)


async def _start_with_plan_only_versions(own_redis: RedisServer, tmp_path: Path) -> DataPlaneHandle:
    """A data plane whose static config holds scorer v1 and v2, with the persisted plans of deployment
    "ranking" (scorer v1, and v3 as its shadow: newer than any static version) and of "tuning" (model
    "tuned", which only that plan loaded: v1 its primary, v2 its canary; and model "lonely", its shadow)."""
    writer = OnlineWriter(redis.Redis.from_url(own_redis.url))
    writer.write(writable(FEATURES), [["1"]], STORED[1][np.newaxis, :], NOW_US)
    settings = serving_settings(tmp_path, own_redis.url)
    assert settings.model_config is not None
    specs = {(s.name, s.version): s for s in load_model_config(settings.model_config)}
    mlp = onnx_models.mlp(input_size=8, hidden=(4,), seed=9)
    shadow = onnx_models.save(
        mlp, tmp_path / "scorer3.onnx", "scorer", version=3, feature_refs=("driver_stats",)
    )
    tuned = onnx_models.save(mlp, tmp_path / "tuned.onnx", "tuned", feature_refs=("driver_stats",))
    tuned2 = onnx_models.save(
        mlp, tmp_path / "tuned2.onnx", "tuned", version=2, feature_refs=("driver_stats",)
    )
    lonely = onnx_models.save(mlp, tmp_path / "lonely.onnx", "lonely", feature_refs=("driver_stats",))
    ranking = dpb.DeploymentPlan(
        deployment="ranking", plan_revision=1,
        variants=[
            _planned(specs["scorer", 1], "blue", dpb.VARIANT_ROLE_PRIMARY, 100.0),
            _planned(shadow, "green-shadow", dpb.VARIANT_ROLE_SHADOW, 100.0),
        ],
    )  # fmt: skip
    tuning = dpb.DeploymentPlan(
        deployment="tuning", plan_revision=1,
        variants=[
            _planned(tuned, "t", dpb.VARIANT_ROLE_PRIMARY, 90.0),
            _planned(tuned2, "t2", dpb.VARIANT_ROLE_CANARY, 10.0),
            _planned(lonely, "l", dpb.VARIANT_ROLE_SHADOW, 100.0),
        ],
    )  # fmt: skip
    snapshot = dpb.DeploymentPlanSnapshot(revision=1, plans=[ranking, tuning])
    save_snapshot(plans_path(settings), snapshot.SerializeToString())
    handle = await start_server(settings)  # loads the persisted plans' versions before it returns
    assert handle.manager.state("scorer", 3) is ModelState.READY  # the shadow is the newest loaded
    return handle


async def test_a_name_without_a_plan_reaches_only_the_static_configs_versions(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """Predict naming no plan fell back to any loaded version of the model of that name: the newest, here
    a deployment's shadow (and a canary the same way, bypassing the canary controller), answered as
    variant "static". Only versions of the static model config may answer so; a model that plans alone
    loaded is NOT_FOUND by its own name."""
    handle = await _start_with_plan_only_versions(own_redis, tmp_path)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            stub = pb_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]
            request = build_predict_request("scorer", [{"driver_id": 1}], routing_key="user-9")
            result = decode_predict_response(await stub.Predict(request, timeout=5))
            assert (result.model_name, result.model_version, result.variant) == ("scorer", 2, "static")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Predict(build_predict_request("tuned", [{"driver_id": 1}]), timeout=5)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            assert "deployment 'tuned' does not exist" in (info.value.details() or "")
    finally:
        await handle.stop(None)


async def test_a_request_time_feature_only_another_variant_reads_is_not_refused(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """A deployment's variants may read different request-time features, and a caller sends one set for
    whichever variant its routing key picks: "temp", read by the canary only, was refused whenever the
    primary served (and a request without it failed on the canary). Only a name that no variant of the
    plan reads is refused."""
    writer = OnlineWriter(redis.Redis.from_url(own_redis.url))
    writer.write(writable(FEATURES), [["1"]], STORED[1][np.newaxis, :], NOW_US)
    settings = serving_settings(tmp_path, own_redis.url)
    assert settings.model_config is not None
    specs = {(s.name, s.version): s for s in load_model_config(settings.model_config)}
    warm = onnx_models.save(
        onnx_models.mlp(input_size=3, hidden=(4,), seed=5), tmp_path / "warm.onnx", "warm",
        feature_refs=("driver_stats:f7", "request:hour", "request:temp"),
    )  # fmt: skip
    plan = dpb.DeploymentPlan(
        deployment="hourly", plan_revision=1, routing_salt="hourly",
        variants=[
            _planned(specs["mixed", 1], "blue", dpb.VARIANT_ROLE_PRIMARY, 50.0),
            _planned(warm, "green", dpb.VARIANT_ROLE_CANARY, 50.0),
        ],
    )  # fmt: skip
    snapshot = dpb.DeploymentPlanSnapshot(revision=1, plans=[plan])
    save_snapshot(plans_path(settings), snapshot.SerializeToString())
    handle = await start_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            stub = pb_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]
            served = set()
            for key in range(24):
                request = build_predict_request(
                    "hourly", [{"driver_id": 1}], routing_key=f"user-{key}",
                    request_features=[{"hour": 3.0, "temp": 21.0}],
                )  # fmt: skip
                served.add(decode_predict_response(await stub.Predict(request, timeout=5)).variant)
            assert served == {"blue", "green"}  # both variants took the same features
            request = build_predict_request(
                "hourly", [{"driver_id": 1}], routing_key="user-1",
                request_features=[{"hour": 3.0, "temp": 21.0, "tmep": 1.0}],
            )  # fmt: skip
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Predict(request, timeout=5)
            details = info.value.details() or ""
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, details
            assert "or any other variant of its deployment reads no request-time feature 'tmep'" in details
    finally:
        await handle.stop(None)


async def test_the_open_inference_protocol_reaches_a_plans_primary_never_its_canary_or_shadow(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """ModelInfer with no version (what tritonclient and KServe tools send) was answered by the newest
    version loaded, a deployment's shadow here, and one naming a plan's version reached it: a shadow
    answered callers, and a canary could be reached past the canary controller. A version plans loaded
    only as a canary or a shadow answers only through its plan: absent for ModelInfer, ModelMetadata (and
    its versions list) and ModelReady, named or not. A plan's primary stays reachable by name (hiding
    it too left a data plane fed by deployments alone with no model ModelInfer could reach)."""
    handle = await _start_with_plan_only_versions(own_redis, tmp_path)
    x = STORED[1][np.newaxis, :]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            stub = oip_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
            answer = await stub.ModelInfer(build_infer_request("scorer", {"input": x}), timeout=5)
            assert (answer.model_name, answer.model_version) == ("scorer", "2")
            meta = await stub.ModelMetadata(oip.ModelMetadataRequest(name="scorer"), timeout=5)
            assert list(meta.versions) == ["1", "2"]
            assert not (await stub.ModelReady(oip.ModelReadyRequest(name="scorer", version="3"))).ready
            assert (await stub.ModelReady(oip.ModelReadyRequest(name="scorer"))).ready
            for call in (
                stub.ModelInfer(build_infer_request("scorer", {"input": x}, version=3), timeout=5),
                stub.ModelMetadata(oip.ModelMetadataRequest(name="scorer", version="3"), timeout=5),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call
                assert info.value.code() == grpc.StatusCode.NOT_FOUND, info.value.details()
                assert "answers only through the deployment plan" in (info.value.details() or "")
            # A model whose every version here is a plan's shadow (or canary) is absent by name...
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ModelInfer(build_infer_request("lonely", {"input": x}), timeout=5)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            assert "answer only through deployment plans" in (info.value.details() or "")
            assert not (await stub.ModelReady(oip.ModelReadyRequest(name="lonely"))).ready
            # ...while a plan's primary is reachable by name (a data plane fed by deployments alone, no
            # static config, must still answer ModelInfer for what it serves), and its canary is not.
            answer = await stub.ModelInfer(build_infer_request("tuned", {"input": x}), timeout=5)
            assert (answer.model_name, answer.model_version) == ("tuned", "1")  # not the newer canary
            assert (await stub.ModelReady(oip.ModelReadyRequest(name="tuned"))).ready
            meta = await stub.ModelMetadata(oip.ModelMetadataRequest(name="tuned"), timeout=5)
            assert list(meta.versions) == ["1"]
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ModelInfer(build_infer_request("tuned", {"input": x}, version=2), timeout=5)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            # A static version a plan also serves stays reachable by name.
            answer = await stub.ModelInfer(build_infer_request("scorer", {"input": x}, version=1), timeout=5)
            assert answer.model_version == "1"
    finally:
        await handle.stop(None)


def _slow_shadow_model(seconds: float, seed: int) -> onnx.ModelProto:
    """A model of 8 inputs (it reads the scorer's features) whose one-row run takes at least ``seconds``
    single-threaded, as the data plane runs it: its layers are scaled from a timed run."""
    probe_layers, rows = 20, 150_000
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    probe = onnx_models.slow(probe_layers, width=8, rows=rows, seed=seed)
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = np.zeros((1, 8), np.float32)
    session.run(None, {"x": x})
    started = time.perf_counter()
    session.run(None, {"x": x})
    per_layer = max(time.perf_counter() - started, 1e-6) / probe_layers
    return onnx_models.slow(max(probe_layers, math.ceil(seconds / per_layer)), width=8, rows=rows, seed=seed)


async def test_slow_shadows_never_hold_the_threads_the_primary_batches_wait_for(
    data_plane: DataPlaneHandle, tmp_path: Path
) -> None:
    """Two shadows whose copies take seconds each, every batch in a worker thread (none inline): the
    primary answers request after request while the shadows still hold their first copies (before the
    fix, both inference threads ran the shadows' batches and the primary's batch waited behind them), and
    the copies mirrored meanwhile are shed, one count per shadow and request."""
    manager = ModelManager(ManagerOptions(inline_batch_below_us=0.0, inference_threads=2))
    settings = _model_specs_by_key(tmp_path)
    primary = settings["scorer", 1]
    shadows = [
        onnx_models.save(
            _slow_shadow_model(1.5, seed), tmp_path / f"slow{seed}.onnx", f"slow{seed}",
            feature_refs=("driver_stats",), warmup_requests=1, max_batch_size=1,
        )
        for seed in (1, 2)
    ]  # fmt: skip
    for spec in [primary, *shadows]:
        await manager.ensure_loaded(spec)
    plan = DeploymentPlan(
        deployment="dep", plan_revision=1, routing_salt="dep",
        variants=(
            Variant("blue", PlanRole.PRIMARY, 100.0, primary),
            Variant("s1", PlanRole.SHADOW, 100.0, shadows[0]),
            Variant("s2", PlanRole.SHADOW, 100.0, shadows[1]),
        ),
    )  # fmt: skip
    plans = DeploymentPlans(revision=1, plans={"dep": plan})
    predictor = Predictor(manager, FeatureAssembler(data_plane.reader), lambda: plans)

    def call(i: int) -> PredictCall:
        return PredictCall("dep", f"user-{i}", [{"driver_id": "1"}], [], f"r{i}")

    try:
        first = await predictor.predict(call(0))
        assert first.variant == "blue"
        mirrored = set(predictor._shadow_tasks)
        assert len(mirrored) == 2
        for i in range(1, 6):
            answered = await predictor.predict(call(i))
            assert answered.variant == "blue"
            assert not any(task.done() for task in mirrored), f"request {i} waited for a shadow's batch"
        assert predictor.shadow_dropped == {("dep", "s1"): 5, ("dep", "s2"): 5}
        await asyncio.gather(*mirrored)
        await predictor.predict(call(6))  # the shadows are free again: mirrored to both, none shed
        assert len(predictor._shadow_tasks) == 2
        assert predictor.shadow_dropped == {("dep", "s1"): 5, ("dep", "s2"): 5}
        await asyncio.gather(*predictor._shadow_tasks)
    finally:
        await manager.close()


def _model_specs_by_key(tmp_path: Path) -> dict[tuple[str, int], ModelSpec]:
    return {(s.name, s.version): s for s in model_specs(tmp_path / "shadow-models")}
