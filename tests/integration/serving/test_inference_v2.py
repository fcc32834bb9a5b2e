"""The Open Inference Protocol v2 over a real grpc.aio data plane: readiness, metadata, ModelInfer with raw
and typed contents, and every fault status."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from clients.errors import FailedPrecondition
from clients.inference import grpc_predict_v2_pb2 as pb
from clients.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from clients.sdk.inference import build_infer_request, decode_infer_response
from data_plane.models.version import ModelState
from data_plane.server import DataPlaneHandle, start_server
from tests.integration.serving.conftest import serving_settings
from tests.support import onnx_models
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture
async def stub(data_plane: DataPlaneHandle) -> AsyncIterator[pb_grpc.GRPCInferenceServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{data_plane.port}") as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]


async def _error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


async def test_server_and_model_readiness_and_metadata(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    assert (await stub.ServerLive(pb.ServerLiveRequest())).live
    assert (await stub.ServerReady(pb.ServerReadyRequest())).ready
    assert (await stub.ModelReady(pb.ModelReadyRequest(name="affine"))).ready
    assert (await stub.ModelReady(pb.ModelReadyRequest(name="scorer", version="2"))).ready
    assert not (await stub.ModelReady(pb.ModelReadyRequest(name="nope"))).ready
    assert not (await stub.ModelReady(pb.ModelReadyRequest(name="affine", version="\u00b2"))).ready
    error = await _error(stub.ModelMetadata(pb.ModelMetadataRequest(name="affine", version="\u00b2")))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "has no version" in (error.details() or "")
    server = await stub.ServerMetadata(pb.ServerMetadataRequest())
    assert server.name == "aether"
    meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name="scorer"))
    assert list(meta.versions) == ["1", "2"] and meta.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("input", "FP32", [-1, 8])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [("output", "FP32", [-1, 1])]


async def test_model_infer_with_raw_and_with_typed_contents(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    response = await stub.ModelInfer(build_infer_request("affine", {"x": x}, request_id="r-1"))
    assert response.id == "r-1" and response.model_version == "1"
    np.testing.assert_array_equal(decode_infer_response(response)["y"], 2 * x + 1)

    typed = pb.ModelInferRequest(model_name="two_inputs", model_version="1")
    typed.inputs.add(name="x", datatype="FP32", shape=[1, 3]).contents.fp32_contents.extend([1.0, 2.0, 3.0])
    typed.inputs.add(name="k", datatype="INT64", shape=[1, 1]).contents.int64_contents.append(3)
    out = decode_infer_response(await stub.ModelInfer(typed))
    assert out["product"].tolist() == [[3.0, 6.0, 9.0]]


async def test_a_bad_row_fails_only_its_request_among_concurrent_ones(
    data_plane: DataPlaneHandle, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    good = [np.full((1, 4), 0.5 * (i % 2), np.float32) for i in range(6)]
    bad = np.full((1, 4), 7.0, np.float32)  # out of the lookup table's range: the model itself fails
    calls = [stub.ModelInfer(build_infer_request("failing", {"x": x})) for x in good]
    calls.insert(3, stub.ModelInfer(build_infer_request("failing", {"x": bad})))
    results = await asyncio.gather(*calls, return_exceptions=True)
    failed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(failed) == 1 and failed[0].code() == grpc.StatusCode.INTERNAL
    assert "indices element out of data bounds" in (failed[0].details() or "")
    answers = [decode_infer_response(r) for r in results if isinstance(r, pb.ModelInferResponse)]
    assert len(answers) == len(good) and all(a["y"].tolist() == [[0.0]] for a in answers)
    # Whether these calls shared a batch depends on how they were spread over event-loop turns, which a
    # loaded machine decides; coalescing itself is tested deterministically in tests/unit/serving.
    batches = data_plane.metrics.registry.get_sample_value(
        "aether_inference_batch_size_count", {"model": "failing", "version": "1"}
    )
    assert batches is not None and batches >= 1


def _affine(x: np.ndarray, **kwargs: object) -> pb.ModelInferRequest:
    return build_infer_request("affine", {"x": x}, **kwargs)  # type: ignore[arg-type]


def _typed(datatype: str, field: str, values: list[int]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="affine")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=[1, len(values)])
    getattr(tensor.contents, field).extend(values)
    return request


def _shaped(shape: list[int], raw: bool) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="affine")
    request.inputs.add(name="x", datatype="FP32", shape=shape)
    if raw:
        request.raw_input_contents.append(b"")
    return request


def _with_parameter(kind: str, name: str) -> pb.ModelInferRequest:
    """An affine request whose input or requested output carries a Triton extension's parameter."""
    request = _affine(ROW, outputs=["y"])
    tensor = request.inputs[0] if kind == "input" else request.outputs[0]
    if name == "classification":
        tensor.parameters[name].int64_param = 2  # tritonclient's InferRequestedOutput(class_count=2)
    else:
        tensor.parameters[name].string_param = "region0"
    return request


ROW = np.zeros((1, 4), np.float32)
AFFINE_SIGNATURE = "x: float32[-1, 4]"
BAD_REQUESTS = [
    (build_infer_request("ghost", {"x": ROW}), "NOT_FOUND", ["ghost"]),
    (_affine(ROW, version=9), "NOT_FOUND", ["version 9"]),
    # A digit that int() refuses (not an INTERNAL error), and one that int() would read as 3.
    (_affine(ROW, version="\u00b2"), "NOT_FOUND", ["has no version '\u00b2'"]),
    (_affine(ROW, version="\u0663"), "NOT_FOUND", ["has no version"]),
    (_affine(np.zeros((1, 5), np.float32)), "INVALID_ARGUMENT", ["'x'", "[1, 5]", AFFINE_SIGNATURE]),
    (_affine(np.zeros((1, 4), np.float64)), "INVALID_ARGUMENT", ["'x'", "float64", AFFINE_SIGNATURE]),
    (
        build_infer_request("two_inputs", {"x": np.zeros((1, 3), np.float32)}),
        "INVALID_ARGUMENT",
        ["'k'", "missing", "k: int64[-1, 1]"],
    ),
    (_affine(np.array([[0, np.nan, 0, 0]], np.float32)), "INVALID_ARGUMENT", ["'x'", "NaN"]),
    (_affine(ROW, outputs=["z"]), "INVALID_ARGUMENT", ["'z'"]),
    (_affine(ROW, outputs=["y", "y"]), "INVALID_ARGUMENT", ["'y'", "requested twice"]),
    # Typed values the datatype cannot hold are refused before anything else, not wrapped.
    (_typed("UINT8", "uint_contents", [7, 300, 1, 2]), "INVALID_ARGUMENT", ["'x'", "UINT8", "300", "0..255"]),
    (_typed("INT16", "int_contents", [-40000, 1, 2, 3]), "INVALID_ARGUMENT", ["'x'", "INT16", "-40000"]),
    # Zero-size shapes need no data, so the length checks pass them; huge other dimensions are refused.
    (_shaped([2**62, 0], raw=True), "INVALID_ARGUMENT", ["'x'", f"[{2**62}, 0]", "too large"]),
    (_shaped([2**40, 2**40, 0], raw=True), "INVALID_ARGUMENT", ["'x'", "too large"]),
    (_shaped([2**62, 0], raw=False), "INVALID_ARGUMENT", ["'x'", f"[{2**62}, 0]", "too large"]),
    # Triton's classification and shared-memory extensions were ignored: the raw tensor came back, OK.
    (_with_parameter("output", "classification"), "INVALID_ARGUMENT", ["output 'y'", "'classification'"]),
    (_with_parameter("output", "shared_memory_region"), "INVALID_ARGUMENT", ["'shared_memory_region'"]),
    (_with_parameter("input", "shared_memory_region"), "INVALID_ARGUMENT", ["input 'x'", "shared_memory"]),
]


@pytest.mark.parametrize(("request_", "code", "words"), BAD_REQUESTS)
async def test_bad_requests_get_the_right_status_and_a_message_naming_the_problem(
    stub: pb_grpc.GRPCInferenceServiceStub, request_: pb.ModelInferRequest, code: str, words: list[str]
) -> None:
    error = await _error(stub.ModelInfer(request_))
    assert error.code().name == code
    for word in words:
        assert word in (error.details() or ""), error.details()


async def test_a_raw_buffer_of_the_wrong_size_is_invalid(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    request = build_infer_request("affine", {"x": np.zeros((1, 4), np.float32)})
    request.raw_input_contents[0] = b"\0" * 12
    error = await _error(stub.ModelInfer(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "expected 16" in (error.details() or "")


async def test_a_version_still_warming_up_is_unavailable(
    data_plane: DataPlaneHandle, stub: pb_grpc.GRPCInferenceServiceStub, tmp_path: Path
) -> None:
    spec = onnx_models.save(onnx_models.slow(layers=100), tmp_path / "slow.onnx", "slow", warmup_requests=40)
    loading = asyncio.create_task(data_plane.manager.ensure_loaded(spec))
    for _ in range(2000):  # the load runs in threads; poll its state
        if data_plane.manager.state("slow", 1) is ModelState.WARMING:
            break
        await asyncio.sleep(0.005)
    request = build_infer_request("slow", {"x": np.zeros((1, 1024), np.float32)}, version=1)
    error = await _error(stub.ModelInfer(request))
    assert error.code() == grpc.StatusCode.UNAVAILABLE and "WARMING" in (error.details() or "")
    assert not (await stub.ModelReady(pb.ModelReadyRequest(name="slow", version="1"))).ready
    await loading
    assert decode_infer_response(await stub.ModelInfer(request))["y"].shape == (1, 1024)


async def test_oversized_messages_and_a_full_queue_are_resource_exhausted(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    settings = serving_settings(tmp_path, own_redis.url, max_message_bytes=4096, max_queue_size=1)
    handle = await start_server(settings)
    try:
        slow = onnx_models.save(
            onnx_models.slow(layers=400, width=256), tmp_path / "slow.onnx", "slow", warmup_requests=1
        )
        await handle.manager.ensure_loaded(slow)
        tiled = onnx_models.save(onnx_models.tiled(1, 2048), tmp_path / "tiled.onnx", "tiled")
        await handle.manager.ensure_loaded(tiled)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
            big = build_infer_request("affine", {"x": np.zeros((300, 4), np.float32)})  # 4.8 kB > 4 kB
            error = await _error(stub.ModelInfer(big))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # A small request whose answer (8 kB) is over the limit: refused, and counted as refused.
            error = await _error(
                stub.ModelInfer(build_infer_request("tiled", {"x": np.ones((1, 1), np.float32)}))
            )
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "bytes, more than the 4096" in (error.details() or ""), error.details()
            counted = {
                code: handle.metrics.registry.get_sample_value(
                    "aether_inference_requests_total",
                    {"api": "ModelInfer", "model": "tiled", "version": "1", "code": code},
                )
                for code in ("OK", "RESOURCE_EXHAUSTED")
            }
            assert counted == {"OK": None, "RESOURCE_EXHAUSTED": 1.0}
            row = build_infer_request("slow", {"x": np.zeros((1, 256), np.float32)})
            results = await asyncio.gather(*(stub.ModelInfer(row) for _ in range(6)), return_exceptions=True)
        codes = [r.code() if isinstance(r, grpc.aio.AioRpcError) else grpc.StatusCode.OK for r in results]
        assert grpc.StatusCode.OK in codes and grpc.StatusCode.RESOURCE_EXHAUSTED in codes, codes
        assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        shed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert "queue is full" in (shed[0].details() or "")
    finally:
        await handle.stop(None)


async def _counted(handle: DataPlaneHandle, labels: dict[str, str], expected: float) -> None:
    """Waits for the server's count (a handler gRPC cancels finishes a moment after its client hears)."""
    value = None
    for _ in range(200):
        value = handle.metrics.registry.get_sample_value("aether_inference_requests_total", labels)
        if value == expected:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"counted {value} for {labels}, expected {expected}")


async def test_a_call_ended_by_its_deadline_or_its_caller_is_counted_as_the_caller_saw_it(
    data_plane: DataPlaneHandle, stub: pb_grpc.GRPCInferenceServiceStub, tmp_path: Path
) -> None:
    spec = onnx_models.save(
        onnx_models.slow_at_least(0.2), tmp_path / "slow.onnx", "slow", warmup_requests=1, max_batch_size=1
    )
    await data_plane.manager.ensure_loaded(spec)  # a request takes ≥ 0.2 s, in a worker thread
    request = build_infer_request("slow", {"x": np.zeros((1, 1024), np.float32)})
    error = await _error(stub.ModelInfer(request, timeout=0.05))  # passes while the model runs
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    labels = {"api": "ModelInfer", "model": "slow", "version": "1"}
    await _counted(data_plane, {**labels, "code": "DEADLINE_EXCEEDED"}, 1)

    gate = data_plane.admissions[1]  # ModelInfer's
    call = stub.ModelInfer(request, timeout=30)
    for _ in range(500):  # cancel once the server holds the call
        if gate.in_flight:
            break
        await asyncio.sleep(0.002)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await _counted(data_plane, {**labels, "code": "CANCELLED"}, 1)
    assert (
        data_plane.metrics.registry.get_sample_value(
            "aether_inference_requests_total", {**labels, "code": "OK"}
        )
        is None
    )


async def test_health_reflection_and_metrics(
    data_plane: DataPlaneHandle, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    await stub.ModelInfer(build_infer_request("affine", {"x": np.zeros((1, 4), np.float32)}))
    await _error(stub.ModelInfer(build_infer_request("ghost", {"x": np.zeros((1, 4), np.float32)})))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{data_plane.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("inference.GRPCInferenceService", "aether.v1.Inference"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = reflect.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = {s.name async for r in responses for s in r.list_services_response.service}
    assert {"inference.GRPCInferenceService", "aether.v1.Inference", "aether.v1.OnlineFeatures"} <= names
    url = f"http://127.0.0.1:{data_plane.metrics_port}/metrics"
    text = (await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())).decode()
    assert (
        'aether_inference_requests_total{api="ModelInfer",code="OK",model="affine",version="1"} 1.0' in text
    )
    assert 'code="NOT_FOUND",model="",version=""' in text  # "ghost" names no model: not a label
    assert 'aether_model_state{model="affine",state="READY",version="1"} 1.0' in text
    assert "aether_inference_latency_seconds_bucket" in text and "aether_inference_queue_depth" in text
    assert 'aether_inference_batch_wait_rows{model="affine",version="1"} 1.0' in text  # nothing learnt


async def test_requests_naming_no_loaded_version_share_one_series(
    data_plane: DataPlaneHandle, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    """Each distinct unknown model name or version used to become a series of its own, kept for ever:
    /metrics and memory grew with every distinct bad request."""
    bad = [build_infer_request(f"ghost-{i}", {"x": ROW}) for i in range(5)]
    bad += [_affine(ROW, version=str(v)) for v in range(100, 105)]  # a loaded model, versions it lacks
    bad += [_affine(ROW, version="v" + "x" * 500)]
    for request in bad:
        assert (await _error(stub.ModelInfer(request))).code() == grpc.StatusCode.NOT_FOUND
    await stub.ModelInfer(_affine(ROW))
    registry = data_plane.metrics.registry
    labels = {"api": "ModelInfer", "model": "", "version": ""}
    assert registry.get_sample_value("aether_inference_requests_total", {**labels, "code": "NOT_FOUND"}) == 11
    families = {f.name: f for f in registry.collect()}
    series = {
        (s.labels["model"], s.labels["version"])
        for name in ("aether_inference_requests", "aether_inference_latency_seconds")
        for s in families[name].samples
    }
    assert series == {("", ""), ("affine", "1")}


async def test_a_request_that_does_not_parse_is_invalid_and_counted(data_plane: DataPlaneHandle) -> None:
    """gRPC's own deserializer answered UNKNOWN with a Python exception's text, and nothing counted it."""
    good = _affine(ROW, request_id="ab").SerializeToString()
    bad_utf8 = good.replace(b"\x1a\x02ab", b"\x1a\x02\xff\xfe")  # field 3 (id): invalid UTF-8
    assert bad_utf8 != good
    async with grpc.aio.insecure_channel(f"127.0.0.1:{data_plane.port}") as channel:
        model_infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")  # bytes in and out
        assert pb.ModelInferResponse.FromString(await model_infer(good)).id == "ab"
        for payload in (bad_utf8, good[:-5]):
            error = await _error(model_infer(payload))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
            assert "request is not a valid ModelInferRequest" in (error.details() or "")
        metadata = channel.unary_unary("/inference.GRPCInferenceService/ModelMetadata")
        error = await _error(metadata(b"\x0a\x05ab"))  # a name 5 bytes long, 2 of them sent
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "request is not a valid ModelMetadataRequest" in (error.details() or "")
    labels = {"api": "ModelInfer", "model": "", "version": "", "code": "INVALID_ARGUMENT"}
    assert data_plane.metrics.registry.get_sample_value("aether_inference_requests_total", labels) == 2


async def test_a_new_version_warming_up_leaves_the_server_ready_and_unlisted_until_it_serves(
    data_plane: DataPlaneHandle, stub: pb_grpc.GRPCInferenceServiceStub, tmp_path: Path
) -> None:
    """ServerReady was false while any version loaded (a canary warming up), with every other version
    serving: a load balancer polling it would have pulled each replica at each canary."""
    slow = onnx_models.slow(layers=100)
    scorer3 = onnx_models.save(slow, tmp_path / "slow.onnx", "scorer", version=3, warmup_requests=40)
    loading = asyncio.create_task(data_plane.manager.ensure_loaded(scorer3))
    for _ in range(2000):  # the load runs in threads; poll its state
        if data_plane.manager.state("scorer", 3) is ModelState.WARMING:
            break
        await asyncio.sleep(0.005)
    assert data_plane.manager.state("scorer", 3) is ModelState.WARMING
    assert (await stub.ServerReady(pb.ServerReadyRequest())).ready
    assert not (await stub.ModelReady(pb.ModelReadyRequest(name="scorer", version="3"))).ready
    meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name="scorer", version="1"))
    assert list(meta.versions) == ["1", "2"]  # v3 would answer UNAVAILABLE
    await loading
    assert (await stub.ModelReady(pb.ModelReadyRequest(name="scorer", version="3"))).ready
    meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name="scorer"))
    assert list(meta.versions) == ["1", "2", "3"]


async def test_a_draining_server_is_not_ready_while_it_still_answers(
    data_plane: DataPlaneHandle, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    """ServerReady stayed true through a drain while every health service said NOT_SERVING: a KServe
    client or probe polling it kept sending to a replica on its way out."""
    assert (await stub.ServerReady(pb.ServerReadyRequest())).ready
    draining = asyncio.create_task(data_plane.drain(delay_s=30.0, grace_s=1.0))
    try:
        await asyncio.wait_for(data_plane.stopping.wait(), 5)
        assert not (await stub.ServerReady(pb.ServerReadyRequest())).ready
        # Within the drain delay requests are still answered: the load balancer is being told to move on.
        x = np.ones((1, 4), np.float32)
        await stub.ModelInfer(build_infer_request("affine", {"x": x}), timeout=5)
    finally:
        draining.cancel()


async def test_a_server_whose_versions_all_failed_is_not_ready(
    data_plane: DataPlaneHandle, stub: pb_grpc.GRPCInferenceServiceStub, tmp_path: Path
) -> None:
    manager = data_plane.manager
    for spec in manager.specs():
        await manager.unload(spec.name, spec.version)
    assert (await stub.ServerReady(pb.ServerReadyRequest())).ready  # nothing held: nothing asked of it
    broken = onnx_models.save(onnx_models.affine(), tmp_path / "a.onnx", "affine", version=2)
    with pytest.raises(FailedPrecondition, match="sha256"):
        await manager.ensure_loaded(dataclasses.replace(broken, artifact_sha256="0" * 64))
    assert not (await stub.ServerReady(pb.ServerReadyRequest())).ready  # it can serve nothing
    assert not (await stub.ModelReady(pb.ModelReadyRequest(name="affine", version="2"))).ready
    assert list((await stub.ModelMetadata(pb.ModelMetadataRequest(name="affine"))).versions) == []
    await manager.ensure_loaded(onnx_models.save(onnx_models.affine(), tmp_path / "b.onnx", "affine"))
    assert (await stub.ServerReady(pb.ServerReadyRequest())).ready


async def test_rows_whose_answer_cannot_be_sent_are_refused_before_the_model_runs(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """A zero-size input ([N, 0], a few bytes) carries any number of rows: the model's N-row answer was
    allocated (8 GiB for N = 2**31-1) before it was found too large to send. Rows whose answer cannot fit
    one message are now refused first, naming the limit; a request that fits is still answered."""
    handle = await start_server(serving_settings(tmp_path, own_redis.url, max_message_bytes=4096))
    try:
        spec = onnx_models.save(onnx_models.row_sum(), tmp_path / "row_sum.onnx", "row_sum")
        await handle.manager.ensure_loaded(spec)

        def zero_size(rows: int) -> pb.ModelInferRequest:
            request = pb.ModelInferRequest(model_name="row_sum")
            request.inputs.add(name="x", datatype="FP32", shape=[rows, 0])
            request.raw_input_contents.append(b"")
            return request

        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
            answer = decode_infer_response(await stub.ModelInfer(zero_size(900)))  # 3,600 bytes: fits
            assert answer["y"].shape == (900, 1)
            advertised: set[int] = set()
            for rows in (1100, 2**31 - 1):
                error = await _error(stub.ModelInfer(zero_size(rows)))
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert f"a request of {rows} rows" in (error.details() or ""), error.details()
                assert "more than the 4096" in (error.details() or "")
                found = re.search(r"send at most (\d+) rows per call", error.details() or "")
                assert found is not None, error.details()
                advertised.add(int(found[1]))
            # The most it advertises is answered: 4096 // 4 = 1024 rows were advertised, and refused once
            # the model had run, the answer's own fields (name, version, id, the output's metadata) on top.
            (most,) = advertised
            answer = decode_infer_response(await stub.ModelInfer(zero_size(most)))
            assert answer["y"].shape == (most, 1)
            with_id = zero_size(most)
            with_id.id = "i" * 64  # as long an id as the limit makes room for
            assert decode_infer_response(await stub.ModelInfer(with_id))["y"].shape == (most, 1)
            error = await _error(stub.ModelInfer(zero_size(most + 1)))
            assert f"a request of {most + 1} rows" in (error.details() or ""), error.details()
    finally:
        await handle.stop(None)
