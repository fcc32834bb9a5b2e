"""GPU benchmark of the model runtime: ONNX Runtime's CUDA execution provider against its CPU provider,
for the model session alone and through the data plane's model manager (validation, dynamic batching,
the runtime), measured in the same run on the same machine.

    python benchmarks/gpu_runtime.py            # about 1 s per figure
    python benchmarks/gpu_runtime.py --quick    # about 0.3 s per figure

Needs ``onnxruntime-gpu`` and a CUDA device (the device machine of this workplace, a GPU host); it says
so and exits 2 elsewhere. What runs:

* two models built by ``tests/support/onnx_models.mlp``: the serving benchmark's MLP (float32
  [batch, 512] → 256 → 64 → 1) and a wide MLP ([batch, 1024] → 4096 → 4096 → 1024 → 1), where the GPU's
  arithmetic matters;
* ``InferenceSession.run`` at batch 1 … 4096 on CPU (1 intra-op thread, the data plane's default, and
  one per core) and on CUDA: latency p50/p99 and rows/s;
* ``ModelManager.infer`` with closed-loop callers of one row each at concurrency 1 and 64 (the dynamic
  batcher forms the batches): requests/s and p50/p99, CPU (the default options) against CUDA.

Writes ``benchmarks/results/gpu_runtime.json`` (machine, GPU, versions, every figure) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402

from benchmarks._common import environment, percentiles_ms, write_results  # noqa: E402
from data_plane.models.manager import ModelManager  # noqa: E402
from data_plane.models.options import ManagerOptions  # noqa: E402
from data_plane.models.spec import ModelSpec  # noqa: E402
from data_plane.runtime.onnx import OnnxOptions, OnnxRuntimeSession  # noqa: E402
from tests.support import onnx_models  # noqa: E402
from tests.support.gpu import cuda_usable  # noqa: E402

BATCHES = (1, 8, 64, 512, 4096)
CONCURRENCY = (1, 64)
CPU = ("CPUExecutionProvider",)
CUDA = ("CUDAExecutionProvider",)


def gpu_description() -> dict[str, str]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return {}
    query = "--query-gpu=name,driver_version,memory.total,clocks.max.sm"
    out = subprocess.run([smi, query, "--format=csv,noheader"], capture_output=True, text=True, check=False)
    fields = [f.strip() for f in out.stdout.splitlines()[0].split(",")] if out.stdout else []
    keys = ("name", "driver", "memory", "max_sm_clock")
    return dict(zip(keys, fields, strict=False))


def loaded_onnxruntime() -> str:
    """The version of the onnxruntime module actually imported: a GPU host may hold the CPU package's
    metadata beside an onnxruntime-gpu that shadows it on the path."""
    import onnxruntime

    return f"{onnxruntime.__version__} ({', '.join(onnxruntime.get_available_providers())})"


def time_session(session: OnnxRuntimeSession, width: int, batch: int, seconds: float) -> dict[str, Any]:
    x = np.random.default_rng(batch).standard_normal((batch, width)).astype(np.float32)
    feeds = {"input": x}
    for _ in range(3):
        session.run(feeds)
    samples: list[float] = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or len(samples) < 5:
        t0 = time.perf_counter()
        session.run(feeds)
        samples.append(time.perf_counter() - t0)
    elapsed = sum(samples)
    return {**percentiles_ms(samples), "rows_per_s": len(samples) * batch / elapsed}


async def _closed_loop(
    manager: ModelManager, spec: ModelSpec, width: int, concurrency: int, seconds: float
) -> dict[str, Any]:
    rows = np.random.default_rng(7).standard_normal((256, 1, width)).astype(np.float32)
    latencies: list[float] = []
    stop_at = 0.0

    async def caller(offset: int) -> None:
        i = offset
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            await manager.infer(spec.name, spec.version, {"input": rows[i % len(rows)]})
            latencies.append(time.perf_counter() - t0)
            i += 1

    stop_at = time.perf_counter() + min(seconds, 0.3)  # warm the batcher and the caches
    await asyncio.gather(*(caller(c) for c in range(concurrency)))
    latencies.clear()
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(caller(c) for c in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {**percentiles_ms(latencies), "requests_per_s": len(latencies) / elapsed}


async def time_manager(
    spec: ModelSpec, width: int, providers: tuple[str, ...], seconds: float
) -> dict[str, Any]:
    manager = ModelManager(ManagerOptions(onnx=OnnxOptions(allowed_providers=providers)))
    try:
        await manager.ensure_loaded(spec)
        out: dict[str, Any] = {"runtime": manager.description(spec.name, spec.version)}
        for concurrency in CONCURRENCY:
            out[f"c{concurrency}"] = await _closed_loop(manager, spec, width, concurrency, seconds)
        return out
    finally:
        await manager.close()


def models(work: Path) -> dict[str, tuple[ModelSpec, int]]:
    built: dict[str, tuple[onnx.ModelProto, int]] = {
        "mlp_512": (onnx_models.mlp(), 512),
        "wide_mlp_1024x4096": (onnx_models.mlp(input_size=1024, hidden=(4096, 4096, 1024)), 1024),
    }
    return {
        name: (onnx_models.save(model, work / f"{name}.onnx", name, warmup_requests=4), width)
        for name, (model, width) in built.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter measurements")
    args = parser.parse_args()
    seconds = 0.3 if args.quick else 1.0
    if not cuda_usable():
        print("no usable CUDA execution provider here (needs onnxruntime-gpu and a CUDA device)")
        return 2
    cores = os.cpu_count() or 1
    variants = {
        "cpu_1_thread": OnnxOptions(allowed_providers=CPU),
        f"cpu_{cores}_threads": OnnxOptions(allowed_providers=CPU, intra_op_threads=cores),
        "cuda": OnnxOptions(allowed_providers=CUDA),
    }
    results: dict[str, Any] = {"session": {}, "manager": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (spec, width) in models(Path(tmp)).items():
            data = Path(spec.artifact_uri).read_bytes()
            results["session"][name] = {}
            for variant, options in variants.items():
                session = OnnxRuntimeSession(data, options)
                figures: dict[str, Any] = {"providers": list(session.providers)}
                for batch in BATCHES:
                    figures[f"batch_{batch}"] = time_session(session, width, batch, seconds)
                    row = figures[f"batch_{batch}"]
                    print(
                        f"{name:<20} {variant:<16} batch {batch:<5} p50 {row['p50_ms']:8.3f} ms  "
                        f"p99 {row['p99_ms']:8.3f} ms  {row['rows_per_s']:12,.0f} rows/s",
                        flush=True,
                    )
                results["session"][name][variant] = figures
                session.close()
            results["manager"][name] = {}
            for variant, providers in (("cpu", CPU), ("cuda", CUDA)):
                figures = asyncio.run(time_manager(spec, width, providers, seconds))
                results["manager"][name][variant] = figures
                for concurrency in CONCURRENCY:
                    row = figures[f"c{concurrency}"]
                    print(
                        f"{name:<20} manager {variant:<8} c={concurrency:<3} p50 {row['p50_ms']:8.3f} ms  "
                        f"p99 {row['p99_ms']:8.3f} ms  {row['requests_per_s']:10,.0f} req/s",
                        flush=True,
                    )
    env = environment(["numpy", "onnxruntime-gpu", "onnx"])
    env["versions"]["onnxruntime (loaded)"] = loaded_onnxruntime()
    command = "python benchmarks/gpu_runtime.py" + (" --quick" if args.quick else "")
    path = write_results("gpu_runtime", {**env, "gpu": gpu_description(), "command": command, **results})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
