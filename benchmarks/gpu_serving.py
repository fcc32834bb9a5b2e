"""GPU benchmark of the whole data plane: ``ModelInfer`` over gRPC (loopback, closed loop) with the
models on ONNX Runtime's CUDA execution provider against the same server restricted to the CPU provider,
measured in the same run.

    python benchmarks/gpu_serving.py             # 3 s per level
    python benchmarks/gpu_serving.py --quick     # 1 s per level
    python benchmarks/gpu_serving.py --cpu-only  # no GPU here: the CPU half alone (a smoke test)

Models (``tests/support/onnx_models.mlp``): the serving benchmark's MLP ([batch, 512] → 256 → 64 → 1) and
a wide MLP ([batch, 1024] → 4096 → 4096 → 1024 → 1). Each request is one row; the data plane's dynamic
batcher forms the batches. The server is ``python -m data_plane`` with its defaults (one worker, one
intra-op thread) and ``AETHER_EXECUTION_PROVIDERS`` naming the provider; it needs no Redis for
``ModelInfer`` (none runs) and no control plane (the models come from a static config).

Writes ``benchmarks/results/gpu_serving.json`` (machine, GPU, versions, every level) and prints a table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

from benchmarks._common import environment, tokenless_environ, write_results  # noqa: E402
from benchmarks._processes import start, stop, wait_ready  # noqa: E402
from benchmarks.gpu_runtime import gpu_description, loaded_onnxruntime  # noqa: E402
from benchmarks.loadgen.core import MODEL_INFER, closed_loop, model_infer_requests  # noqa: E402
from data_plane.models.spec import dump_model_config  # noqa: E402
from tests.support import onnx_models  # noqa: E402
from tests.support.gpu import cuda_usable  # noqa: E402
from tests.support.redis_server import free_port  # noqa: E402

LEVELS = (1, 16, 64)
MODELS = {"mlp_512": 512, "wide_mlp_1024x4096": 1024}


def _config(work: Path) -> Path:
    specs = [
        onnx_models.save(onnx_models.mlp(), work / "mlp_512.onnx", "mlp_512", warmup_requests=20),
        onnx_models.save(
            onnx_models.mlp(input_size=1024, hidden=(4096, 4096, 1024)),
            work / "wide.onnx", "wide_mlp_1024x4096", warmup_requests=20,
        ),
    ]  # fmt: skip
    path = work / "models.json"
    dump_model_config(specs, path)
    return path


def _serve(config: Path, work: Path, provider: str, duration: float) -> dict[str, Any]:
    args = [
        sys.executable, "-m", "data_plane", "--listen", "127.0.0.1:0",
        "--redis-url", f"redis://127.0.0.1:{free_port()}/0",  # ModelInfer reads no features
        "--control-plane", f"127.0.0.1:{free_port()}", "--snapshot-path", str(work / "no-snapshot.pb"),
        "--model-config", str(config), "--prediction-log-sample-rate", "0",
    ]  # fmt: skip
    env = {
        **tokenless_environ(),
        "AETHER_HOME": str(work / provider),
        "AETHER_EXECUTION_PROVIDERS": provider,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }
    process, port = start(args, "aether data plane listening on", env)
    results: dict[str, Any] = {}
    try:
        for model, width in MODELS.items():
            wait_ready(port, model, timeout_s=180)
            requests = model_infer_requests(model, width)
            results[model] = {}
            for level in LEVELS:
                run = uvloop.run(
                    closed_loop(f"127.0.0.1:{port}", MODEL_INFER, requests, level, duration, warmup_s=0.5)
                )
                results[model][str(level)] = run.summary()
                print(
                    f"{model:<20} {provider:<22} c={level:<3} {run.throughput_rps:9,.0f} req/s  "
                    f"p50 {run.p50_ms:7.3f} ms  p99 {run.p99_ms:7.3f} ms  errors {run.errors}",
                    flush=True,
                )
    finally:
        stop(process)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 s per level instead of 3")
    parser.add_argument("--cpu-only", action="store_true", help="serve on the CPU provider alone")
    args = parser.parse_args()
    providers = ["CPUExecutionProvider"]
    if not args.cpu_only:
        if not cuda_usable():
            print("no usable CUDA execution provider here (needs onnxruntime-gpu and a CUDA device)")
            return 2
        providers.append("CUDAExecutionProvider")
    duration = 1.0 if args.quick else 3.0
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="aether-gpu-serving-") as tmp:
        work = Path(tmp)
        config = _config(work)
        for provider in providers:
            results[provider] = _serve(config, work, provider, duration)
    if args.cpu_only:
        return 0  # a smoke test: no GPU figures to record
    env = environment(["numpy", "onnxruntime-gpu", "grpcio", "protobuf", "uvloop"])
    env["versions"]["onnxruntime (loaded)"] = loaded_onnxruntime()
    command = "python benchmarks/gpu_serving.py" + (" --quick" if args.quick else "")
    path = write_results(
        "gpu_serving", {**env, "gpu": gpu_description(), "command": command, "results": results}
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
