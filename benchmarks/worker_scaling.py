"""How ``ModelInfer`` throughput scales with data-plane worker processes on one port (``--workers N``,
SO_REUSEPORT), on the CPU provider.

    python benchmarks/worker_scaling.py                      # 1, 2 and 4 workers
    python benchmarks/worker_scaling.py --workers 1,2 --quick

Every server (one per worker count) is started up front and they are measured interleaved, in slices, so
that a shared host's drifting speed hits them all alike. The load comes from several client processes
(one Python process tops out near one core's worth of gRPC calls), each with several channels on their own
TCP connections: the kernel spreads connections, not requests, over the workers of a port, so one
connection would reach one worker. The model is the serving benchmark's MLP ([batch, 512] → 256 → 64 → 1),
one row per request; the data plane needs no Redis or control plane for ``ModelInfer``.

On a 2-core host the load generator and the server share the cores, so extra workers buy little; the
figure that matters is from a machine with spare cores (the device machine, 16 cores). Writes
``benchmarks/results/worker_scaling.json`` (or ``--output NAME``) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import grpc.aio  # noqa: E402
import numpy as np  # noqa: E402
import uvloop  # noqa: E402

from benchmarks._common import environment, tokenless_environ, write_results  # noqa: E402
from benchmarks._processes import start, stop, wait_ready  # noqa: E402
from benchmarks.loadgen.core import MODEL_INFER, RunSamples, model_infer_requests  # noqa: E402
from data_plane.models.spec import dump_model_config  # noqa: E402
from tests.support import onnx_models  # noqa: E402
from tests.support.redis_server import free_port  # noqa: E402

MODEL = "mlp"
WIDTH = 512


async def _client(target: str, concurrency: int, channels: int, duration_s: float, warmup_s: float) -> Any:
    """One client process's closed loop: ``concurrency`` callers spread over ``channels`` connections."""
    requests = model_infer_requests(MODEL, WIDTH)
    # A local subchannel pool gives each channel its own TCP connection (else they would share one).
    opened = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(channels)
    ]
    calls = [c.unary_unary(MODEL_INFER, request_serializer=None, response_deserializer=None) for c in opened]
    for call in calls:
        await call(requests[0], timeout=30)
    latencies: list[float] = []
    errors = 0
    begin = time.perf_counter()
    measure_from, end = begin + warmup_s, begin + warmup_s + duration_s

    async def caller(index: int) -> None:
        nonlocal errors
        call = calls[index % len(calls)]
        i = index
        while (sent := time.perf_counter()) < end:
            try:
                await call(requests[i % len(requests)], timeout=10)
            except grpc.aio.AioRpcError:
                errors += sent >= measure_from
            else:
                if sent >= measure_from:
                    latencies.append(time.perf_counter() - sent)
            i += 1

    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    for channel in opened:
        await channel.close()
    return np.asarray(latencies), errors


def _client_process(args: tuple[str, int, int, float, float]) -> Any:
    return uvloop.run(_client(*args))


def _measure(pool: Any, port: int, clients: int, concurrency: int, slice_s: float) -> RunSamples:
    per_client = max(1, concurrency // clients)
    args = [(f"127.0.0.1:{port}", per_client, 4, slice_s, 0.3)] * clients
    run = RunSamples(per_client * clients, duration_s=slice_s)
    for samples, errors in pool.map(_client_process, args):
        run.samples.append(samples)
        run.errors += errors
    return run


def _server(config: Path, work: Path, workers: int) -> tuple[Any, int]:
    args = [
        sys.executable, "-m", "data_plane", "--listen", "127.0.0.1:0",
        "--redis-url", f"redis://127.0.0.1:{free_port()}/0",  # ModelInfer reads no features
        "--control-plane", f"127.0.0.1:{free_port()}", "--snapshot-path", str(work / "no-snapshot.pb"),
        "--model-config", str(config), "--prediction-log-sample-rate", "0", "--workers", str(workers),
    ]  # fmt: skip
    env = {
        **tokenless_environ(),
        "AETHER_HOME": str(work / f"workers-{workers}"),
        "AETHER_EXECUTION_PROVIDERS": "CPUExecutionProvider",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }
    return start(args, "aether data plane listening on", env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4", help="worker counts to compare")
    parser.add_argument("-c", "--concurrency", type=int, default=64, help="callers in all")
    parser.add_argument("--clients", type=int, default=0, help="client processes (0: half the cores, 1–8)")
    parser.add_argument("--quick", action="store_true", help="2 slices per server instead of 5")
    parser.add_argument("--output", default="worker_scaling", help="results file name")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    clients = args.clients or max(1, min(8, (os.cpu_count() or 2) // 2))
    rounds, slice_s = (2, 1.0) if args.quick else (5, 2.0)
    runs: dict[int, RunSamples] = {}
    with tempfile.TemporaryDirectory(prefix="aether-workers-") as tmp:
        work = Path(tmp)
        config = work / "models.json"
        dump_model_config(
            [onnx_models.save(onnx_models.mlp(), work / "mlp.onnx", MODEL, warmup_requests=20)], config
        )
        servers = {n: _server(config, work, n) for n in counts}
        try:
            for _, port in servers.values():
                wait_ready(port, MODEL, timeout_s=120)
            with multiprocessing.get_context("spawn").Pool(clients) as pool:
                for _ in range(rounds):
                    for n, (_, port) in servers.items():
                        run = _measure(pool, port, clients, args.concurrency, slice_s)
                        runs.setdefault(n, RunSamples(run.concurrency)).add(run)
        finally:
            for process, _ in servers.values():
                stop(process)
    results = {str(n): run.result().summary() for n, run in runs.items()}
    base = results[str(counts[0])]["throughput_rps"]
    print(f"{'workers':>8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'scaling':>8}")
    for n in counts:
        r = results[str(n)]
        r["scaling"] = r["throughput_rps"] / base if base else float("nan")
        print(
            f"{n:>8} {r['throughput_rps']:>9,.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['errors']:>7} "
            f"{r['scaling']:>7.2f}×"
        )
    env = environment(["numpy", "onnxruntime", "grpcio", "protobuf", "uvloop"])
    command = "python benchmarks/worker_scaling.py" + (" --quick" if args.quick else "")
    setup = {"concurrency": args.concurrency, "client_processes": clients, "channels_per_client": 4,
             "slices": rounds, "slice_s": slice_s}  # fmt: skip
    path = write_results(args.output, {**env, "command": command, "setup": setup, "results": results})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
