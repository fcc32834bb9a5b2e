"""Where batches run: on the event loop when the version's warm-up showed them short (no thread handoff),
in worker threads otherwise, and back to threads for good when inline batches keep running long."""

from __future__ import annotations

import asyncio
import threading
import time
import tracemalloc
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from clients.serving_rules import MAX_WARMUP_REQUESTS
from data_plane.batching import BatchPolicy, DynamicBatcher
from data_plane.inline_gate import InlineGate
from data_plane.models.manager import ModelManager
from data_plane.models.options import ManagerOptions
from data_plane.models.spec import ModelSpec
from data_plane.models.warmup import recorded_inputs, warm_up, warmup_requests
from data_plane.runtime.base import Runtime
from data_plane.runtime.onnx import OnnxOptions, OnnxRuntimeSession
from tests.support import onnx_models

LIMIT_S = 0.0005


def test_the_gate_opens_only_on_a_measured_estimate_under_the_limit() -> None:
    assert InlineGate(LIMIT_S, 0.0001, 32).open
    assert not InlineGate(LIMIT_S, 0.0006, 32).open  # the warm-up batch was too long
    assert not InlineGate(LIMIT_S, None, 32).open  # never measured: threads
    assert not InlineGate(0.0, 0.0, 32).open  # the limit 0 turns inline batches off


def test_the_gate_admits_batches_no_larger_than_the_measured_one() -> None:
    gate = InlineGate(LIMIT_S, 0.0001, 8)
    assert gate.admits(1) and gate.admits(8) and not gate.admits(9)


def test_one_slow_run_is_forgiven_but_a_run_of_them_closes_the_gate_for_good() -> None:
    gate = InlineGate(LIMIT_S, 0.0001, 8, strikes=3)
    for _ in range(5):  # a slow run now and then (a GC pause) between fast ones
        assert not gate.ran(0.01)
        assert not gate.ran(0.0001)
    assert gate.open
    assert not gate.ran(0.01) and not gate.ran(0.01)
    assert gate.ran(0.01)  # the third in a row closes it, and says so once
    assert not gate.open and not gate.ran(0.0001) and not gate.open


def _runner(threads: list[int], seconds: float = 0.0) -> object:
    def run(payloads: Sequence[int]) -> list[int | BaseException]:
        threads.append(threading.get_ident())
        if seconds:
            time.sleep(seconds)
        return [ValueError(f"bad {p}") if p < 0 else p * 2 for p in payloads]

    return run


async def test_an_open_gate_runs_batches_on_the_loop_thread_and_still_isolates_failures() -> None:
    threads: list[int] = []
    batcher: DynamicBatcher[int, int] = DynamicBatcher(
        BatchPolicy(max_batch_size=4, inline_below_s=LIMIT_S),
        _runner(threads),  # type: ignore[arg-type]
        inline=InlineGate(LIMIT_S, 0.0001, 4),
    )
    assert await batcher.submit(21, 1, "g", None) == 42
    submits = (batcher.submit(v, 1, "g", None) for v in [1, -2, 3, 4, 5])
    results = await asyncio.gather(*submits, return_exceptions=True)
    assert [r if isinstance(r, int) else str(r) for r in results] == [2, "bad -2", 6, 8, 10]
    assert set(threads) == {threading.get_ident()}


async def test_a_closed_gate_runs_batches_in_worker_threads() -> None:
    threads: list[int] = []
    with ThreadPoolExecutor(1) as executor:
        batcher: DynamicBatcher[int, int] = DynamicBatcher(
            BatchPolicy(inline_below_s=LIMIT_S),
            _runner(threads),  # type: ignore[arg-type]
            executor,
            inline=InlineGate(LIMIT_S, None, 32),
        )
        assert await asyncio.gather(*(batcher.submit(v, 1, "g", None) for v in range(4))) == [0, 2, 4, 6]
    assert threads and threading.get_ident() not in threads


async def test_a_model_slower_than_its_warm_up_moves_to_worker_threads() -> None:
    threads: list[int] = []
    batcher: DynamicBatcher[int, int] = DynamicBatcher(
        BatchPolicy(inline_below_s=LIMIT_S),
        _runner(threads, seconds=0.002),  # type: ignore[arg-type]
        inline=InlineGate(LIMIT_S, 0.0001, 32, strikes=2),
    )
    for value in range(4):
        assert await batcher.submit(value, 1, "g", None) == value * 2
    loop_thread = threading.get_ident()
    assert threads[:2] == [loop_thread, loop_thread]  # two slow runs in a row on the loop...
    assert not batcher.inline.open and loop_thread not in threads[2:]  # ...then threads


def test_the_warm_up_times_its_largest_batch(tmp_path: Path) -> None:
    spec = onnx_models.save(onnx_models.mlp(), tmp_path / "m.onnx", "m", warmup_requests=6)
    runtime = OnnxRuntimeSession(Path(spec.artifact_uri).read_bytes(), OnnxOptions())
    report = warm_up(runtime, spec)
    assert report.requests == 6 and report.largest_rows == spec.max_batch_size
    assert report.largest_seconds is not None and 0 < report.largest_seconds < 1
    single = warm_up(
        runtime, onnx_models.save(onnx_models.mlp(), tmp_path / "s.onnx", "s", warmup_requests=1)
    )
    assert single.largest_seconds is None  # one run is no measurement: that version stays on threads


async def test_the_manager_opens_the_gate_from_the_warm_up_and_the_setting(tmp_path: Path) -> None:
    spec = onnx_models.save(onnx_models.mlp(), tmp_path / "m.onnx", "m", warmup_requests=6)
    x = {"input": np.ones((1, 512), np.float32)}
    for limit_us, inline in [(0.0, False), (1e6, True)]:
        manager = ModelManager(ManagerOptions(inline_batch_below_us=limit_us))
        try:
            await manager.ensure_loaded(spec)
            assert manager.runs_batches_inline("m", 1) is inline
            assert (await manager.infer("m", 1, x))["output"].shape == (1, 1)
        finally:
            await manager.close()


class DeviceBoundSession(OnnxRuntimeSession):
    """A named fake: a CPU session that reports its runs as waits on an accelerator, as a CUDA session
    does (the real one is covered in tests/integration/serving/test_gpu_execution.py, on a GPU)."""

    @property
    def waits_on_device(self) -> bool:
        return True


async def test_runtimes_that_wait_on_a_device_never_run_inline(tmp_path: Path) -> None:
    spec = onnx_models.save(onnx_models.mlp(), tmp_path / "m.onnx", "m", warmup_requests=6)
    assert OnnxRuntimeSession(onnx_models.mlp().SerializeToString(), OnnxOptions()).waits_on_device is False

    def device_bound(model: bytes, _spec: ModelSpec, options: ManagerOptions) -> Runtime:
        return DeviceBoundSession(model, options.onnx)

    # However fast its warm-up was, under the most generous limit.
    manager = ModelManager(ManagerOptions(inline_batch_below_us=1e6), runtime_factory=device_bound)
    try:
        await manager.ensure_loaded(spec)
        assert manager.runs_batches_inline("m", 1) is False
        answer = await manager.infer("m", 1, {"input": np.ones((1, 512), np.float32)})
        assert answer["output"].shape == (1, 1)
    finally:
        await manager.close()


def test_a_warm_up_from_recorded_samples_runs_full_batches_too(tmp_path: Path) -> None:
    """Recorded samples were run one row at a time only: the batch size the batcher runs under load was
    never prepared, and the inline gate judged the version on single rows."""
    spec = onnx_models.save(onnx_models.mlp(input_size=8), tmp_path / "m.onnx", "m", warmup_requests=6)
    np.savez(tmp_path / "s.npz", input=np.arange(24, dtype=np.float32).reshape(3, 8))
    samples = recorded_inputs(spec, str(tmp_path / "s.npz"))
    requests = list(warmup_requests(spec, samples))
    assert [len(r["input"]) for r in requests] == [1, spec.max_batch_size] * 3
    assert [r["input"][0, 0] for r in requests[::2]] == [0, 8, 16]  # each recorded row in turn
    assert requests[1]["input"][:, 0].tolist() == [[0, 8, 16][i % 3] for i in range(spec.max_batch_size)]
    runtime = OnnxRuntimeSession(Path(spec.artifact_uri).read_bytes(), OnnxOptions())
    assert warm_up(runtime, spec, samples).largest_rows == spec.max_batch_size


def test_the_warm_up_memory_does_not_grow_with_its_requests(tmp_path: Path) -> None:
    """Every warm-up request was built before the first ran: 2**31 - 1 of them grew the data plane by ~200
    MiB/s until it was killed. At the bound, 5,000 full batches of 64 x 32 float32 were ~40 MiB at once."""
    spec = onnx_models.save(
        onnx_models.mlp(input_size=32, hidden=(4,)),
        tmp_path / "m.onnx",
        "m",
        warmup_requests=MAX_WARMUP_REQUESTS,
        max_batch_size=64,
    )
    runtime = OnnxRuntimeSession(Path(spec.artifact_uri).read_bytes(), OnnxOptions())
    tracemalloc.start()
    try:
        report = warm_up(runtime, spec)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.requests == MAX_WARMUP_REQUESTS and report.largest_rows == 64
    assert peak < 4 * 2**20, f"the warm-up held {peak / 2**20:.1f} MiB at its peak"


async def test_a_version_with_a_dynamic_non_batch_dimension_never_runs_inline(tmp_path: Path) -> None:
    """The warm-up runs x: float32[b, n] at n = 1, so its time bounds nothing: the version was judged short
    and a [1, 2000000] request ran half a second on the event loop, stalling every other call."""
    spec = onnx_models.save(onnx_models.row_sum(), tmp_path / "r.onnx", "r", warmup_requests=6)
    fixed = onnx_models.save(onnx_models.affine(), tmp_path / "a.onnx", "a", warmup_requests=6)
    manager = ModelManager(ManagerOptions(inline_batch_below_us=1e6))  # the most generous limit
    try:
        await manager.ensure_loaded(spec)
        await manager.ensure_loaded(fixed)
        assert manager.runs_batches_inline("r", 1) is False
        assert manager.runs_batches_inline("a", 1) is True  # fixed widths: rows bound the batch
        answer = await manager.infer("r", 1, {"x": np.ones((1, 1000), np.float32)})
        assert answer["y"].tolist() == [[1000.0]]
    finally:
        await manager.close()
