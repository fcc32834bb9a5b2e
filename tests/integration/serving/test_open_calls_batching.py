"""Callers at once share batches, a caller alone never waits: the server's open calls
(:class:`data_plane.admission.OpenCalls`) over a real grpc.aio data plane, through ModelInfer and Predict.

The versions here wait up to a whole second for company (``max_queue_delay_us``), so a request that waited
for nothing (a lone call, or an open-calls count that never came back down) shows as a second lost, far
above anything a loaded machine adds, and a batch of concurrent calls leaves as soon as it is full. The
burst of calls runs while another call (to a slow model, in a worker thread) is open: client and server
share one event loop here, which may otherwise answer each call of the burst before the next arrives,
and each is then rightly alone."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc.aio
import numpy as np
import pytest

from clients.aether.v1 import inference_pb2_grpc
from clients.inference import grpc_predict_v2_pb2_grpc
from clients.sdk.inference import (
    build_infer_request,
    build_predict_request,
    decode_infer_response,
    decode_predict_response,
)
from data_plane.server import DataPlaneHandle
from tests.integration.serving.conftest import load_as_static
from tests.support import onnx_models

pytestmark = pytest.mark.integration

WAIT_US = 1_000_000  # how long a request among others may wait for company
BATCH = 4
CALLERS = 12
LONE_CALL_S = 0.5  # a lone call waiting for company would take WAIT_US: 1 s


@pytest.fixture
async def channel(data_plane: DataPlaneHandle) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{data_plane.port}") as opened:
        yield opened


@contextlib.asynccontextmanager
async def _another_call_open(
    handle: DataPlaneHandle, channel: grpc.aio.Channel, tmp_path: Path
) -> AsyncIterator[None]:
    """A ModelInfer call to a slow model (≥ 0.5 s, in a worker thread) open on the server throughout."""
    spec = onnx_models.save(
        onnx_models.slow_at_least(0.5), tmp_path / "slow.onnx", "slow", warmup_requests=1, max_batch_size=1
    )
    await handle.manager.ensure_loaded(spec)
    stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
    call = stub.ModelInfer(build_infer_request("slow", {"x": np.zeros((1, 1024), np.float32)}), timeout=60)
    gate = handle.admissions[1]  # ModelInfer's
    for _ in range(2500):
        if gate.in_flight:
            break
        await asyncio.sleep(0.002)
    assert gate.in_flight == 1
    yield
    assert gate.in_flight == 1, "the slow call ended during the burst: make it slower"
    await call


def _batches(handle: DataPlaneHandle, model: str) -> tuple[float, float]:
    """(batches run, rows in them) of version 1 of ``model``."""
    labels = {"model": model, "version": "1"}
    registry = handle.metrics.registry
    count = registry.get_sample_value("aether_inference_batch_size_count", labels) or 0.0
    rows = registry.get_sample_value("aether_inference_batch_size_sum", labels) or 0.0
    return count, rows


async def _lone_call_seconds(call: object) -> float:
    started = time.monotonic()
    await call  # type: ignore[misc]
    return time.monotonic() - started


async def test_concurrent_model_infer_calls_share_batches_and_a_lone_call_never_waits(
    data_plane: DataPlaneHandle, channel: grpc.aio.Channel, tmp_path: Path
) -> None:
    spec = onnx_models.save(
        onnx_models.affine(), tmp_path / "m" / "pooled.onnx", "pooled",
        max_queue_delay_us=WAIT_US, max_batch_size=BATCH, warmup_requests=8,
    )  # fmt: skip
    await load_as_static(data_plane, spec)
    stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
    rows = [np.full((1, 4), float(i), np.float32) for i in range(CALLERS)]
    before = _batches(data_plane, "pooled")

    async with _another_call_open(data_plane, channel, tmp_path):
        answers = await asyncio.gather(
            *(stub.ModelInfer(build_infer_request("pooled", {"x": x}), timeout=30) for x in rows)
        )

    for x, answer in zip(rows, answers, strict=True):  # each caller got its own row's answer
        np.testing.assert_array_equal(decode_infer_response(answer)["y"], 2 * x + 1)
    count, summed = (
        after - start for after, start in zip(_batches(data_plane, "pooled"), before, strict=True)
    )
    assert summed == CALLERS and count == CALLERS // BATCH  # full batches only, none ran twice
    # Every call has ended, so the next one is alone: it runs at once (a count that leaked would keep it
    # waiting for company it never gets, WAIT_US).
    lone = stub.ModelInfer(build_infer_request("pooled", {"x": rows[0]}), timeout=30)
    assert await _lone_call_seconds(lone) < LONE_CALL_S


async def test_concurrent_predict_calls_share_batches_and_a_lone_call_never_waits(
    data_plane: DataPlaneHandle, channel: grpc.aio.Channel, tmp_path: Path
) -> None:
    spec = onnx_models.save(
        onnx_models.mlp(input_size=8, hidden=(4,)), tmp_path / "m" / "pooled_scorer.onnx", "pooled_scorer",
        feature_refs=("driver_stats",), max_queue_delay_us=WAIT_US, max_batch_size=BATCH, warmup_requests=8,
    )  # fmt: skip
    await load_as_static(data_plane, spec)
    stub = inference_pb2_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]
    request = build_predict_request("pooled_scorer", [{"driver_id": 1}])
    alone = await stub.Predict(request, timeout=30)
    before = _batches(data_plane, "pooled_scorer")

    async with _another_call_open(data_plane, channel, tmp_path):  # open on the other API: one count
        answers = await asyncio.gather(*(stub.Predict(request, timeout=30) for _ in range(CALLERS)))

    expected = decode_predict_response(alone)
    for answer in map(decode_predict_response, answers):  # batched with others, the same answer
        assert (answer.model_name, answer.model_version) == (expected.model_name, expected.model_version)
        np.testing.assert_allclose(answer.outputs["output"], expected.outputs["output"], rtol=1e-5)
    count, summed = (
        after - start for after, start in zip(_batches(data_plane, "pooled_scorer"), before, strict=True)
    )
    assert summed == CALLERS and count == CALLERS // BATCH
    assert await _lone_call_seconds(stub.Predict(request, timeout=30)) < LONE_CALL_S
