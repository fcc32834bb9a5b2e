"""The CUDA path of serving on a real GPU: ONNX Runtime sessions start on the CUDA execution provider
first, agree with the CPU provider, and the model manager serves batched requests through them.

These need onnxruntime-gpu and a CUDA device (the device machine of this workplace, any GPU host); CI has
neither, so there they are skipped with that reason. Run on the device machine with
``python -m pytest --noconftest tests/integration/serving/test_gpu_execution.py`` (no fixture here
needs Redis or PostgreSQL)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from data_plane.models.manager import ModelManager
from data_plane.models.options import ManagerOptions
from data_plane.runtime.onnx import OnnxOptions, OnnxRuntimeSession
from tests.support import onnx_models
from tests.support.gpu import cuda_usable

pytestmark = pytest.mark.skipif(
    not cuda_usable(), reason="no CUDA device usable by ONNX Runtime here (needs onnxruntime-gpu and a GPU)"
)

CPU_ONLY = OnnxOptions(allowed_providers=("CPUExecutionProvider",))


def test_sessions_prefer_cuda_and_say_so() -> None:
    session = OnnxRuntimeSession(onnx_models.mlp().SerializeToString(), OnnxOptions())
    assert session.providers[0] in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    assert "CUDAExecutionProvider" in session.providers
    assert session.providers[-1] == "CPUExecutionProvider"
    assert "CUDAExecutionProvider" in session.description


@pytest.mark.parametrize("batch", [1, 7, 256, 4096])
def test_cuda_answers_agree_with_the_cpu(batch: int) -> None:
    model = onnx_models.mlp(input_size=1024, hidden=(2048, 512)).SerializeToString()
    x = np.random.default_rng(batch).standard_normal((batch, 1024)).astype(np.float32)
    gpu = OnnxRuntimeSession(model, OnnxOptions(allowed_providers=("CUDAExecutionProvider",)))
    cpu = OnnxRuntimeSession(model, CPU_ONLY)
    on_gpu = gpu.run({"input": x})["output"]
    on_cpu = cpu.run({"input": x})["output"]
    assert on_gpu.shape == on_cpu.shape == (batch, 1)
    assert on_gpu.dtype == np.float32
    # CUDA may use TF32 matrix products (10-bit mantissa); far looser than that would be a wrong answer.
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-2, atol=1e-2 * float(np.abs(on_cpu).max()))


def test_manager_serves_concurrent_requests_on_cuda(tmp_path: Path) -> None:
    spec = onnx_models.save(onnx_models.mlp(), tmp_path / "mlp.onnx", "mlp")
    rows = np.random.default_rng(3).standard_normal((200, 1, 512)).astype(np.float32)
    expected = OnnxRuntimeSession(onnx_models.mlp().SerializeToString(), CPU_ONLY).run(
        {"input": rows[:, 0, :]}
    )["output"]

    async def serve() -> tuple[str, list[np.ndarray]]:
        manager = ModelManager(ManagerOptions())
        try:
            await manager.ensure_loaded(spec)
            answers = await asyncio.gather(
                *(manager.infer("mlp", 1, {"input": row}) for row in rows)  # batched by the batcher
            )
            # A CUDA run waits on the device: it never blocks the event loop, however short.
            assert manager.runs_batches_inline("mlp", 1) is False
            return manager.description("mlp", 1), [a["output"] for a in answers]
        finally:
            await manager.close()

    description, answers = asyncio.run(serve())
    assert "CUDAExecutionProvider" in description
    got = np.concatenate(answers)
    assert got.shape == (200, 1)
    np.testing.assert_allclose(got, expected, rtol=1e-2, atol=1e-2 * float(np.abs(expected).max()))


def _tensorrt_provider_usable() -> bool:
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        return False
    model = onnx_models.affine().SerializeToString()
    session = OnnxRuntimeSession(model, OnnxOptions(allowed_providers=("TensorrtExecutionProvider",)))
    return session.providers[0] == "TensorrtExecutionProvider"


@pytest.mark.skipif(
    not _tensorrt_provider_usable(), reason="ONNX Runtime's TensorRT provider does not start here"
)
def test_two_versions_of_one_architecture_do_not_share_a_cached_tensorrt_engine(tmp_path: Path) -> None:
    """The TensorRT provider's engine-cache name hashes the graph's tensor names, not its weights: with one
    cache folder and no per-model prefix, v2 loaded version 1's engine and answered with its weights."""
    options = OnnxOptions(
        allowed_providers=("TensorrtExecutionProvider",), trt_cache_dir=tmp_path / "trt_cache"
    )
    x = np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32)
    for seed in (1, 2, 1):  # the last one loads version 1's engine from the cache
        model = onnx_models.mlp(seed=seed).SerializeToString()
        on_trt = OnnxRuntimeSession(model, options).run({"input": x})["output"]
        on_cpu = OnnxRuntimeSession(model, CPU_ONLY).run({"input": x})["output"]
        np.testing.assert_allclose(on_trt, on_cpu, rtol=1e-2, atol=1e-2 * float(np.abs(on_cpu).max()))
    assert any((tmp_path / "trt_cache").iterdir())
