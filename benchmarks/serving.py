"""Serving benchmark: one command, every figure from one run (so the ratios compare like with like).

    python benchmarks/serving.py            # 5 s per server and level
    python benchmarks/serving.py --quick    # 2 s per server and level

What runs (all on this machine, the load generator included: ``benchmarks/loadgen``, closed loop):

* the MLP (float32 [batch, 512] → 256 → 64 → 1, ReLU) through the data plane's ``ModelInfer`` (raw
  tensors), at concurrency 1, 8, 32, 64;
* ``Predict`` on the same MLP shape with 500 inputs, whose features the data plane fetches itself (one
  view of 500 float32 features per entity, 10,000 entities written with the online writer);
* baselines: a bare grpc.aio ``ModelInfer`` server answering a constant (the floor), and the same
  server running the MLP per request on the event loop with nothing else (the floor with inference,
  ``benchmarks/floor_server.py --model``), which splits the data plane's distance to the floor into
  what inference in a Python gRPC server costs and what serving logic costs; Seldon MLServer
  1.7.1 serving the same ONNX file through a minimal ONNX Runtime runtime, in its own virtual environment
  (``.venv-bench-mlserver``), in-process (``parallel_workers: 0``) with adaptive batching off and on;
  in-process ONNX Runtime throughput at batch 1 and 32;
* the data plane with ``--workers 2`` (SO_REUSEPORT) against one worker.

Every server is up for the whole run and, at each level, they are measured in turn in 1 s slices (floor,
ModelInfer, Predict, …, floor, …), each one's slices pooled: this host's speed drifts by 2x within
minutes, and servers measured one after the other compared different machines.

Writes ``benchmarks/results/serving.json`` (machine, versions, every level, the targets and whether they
were met; under ``results/quick/`` with ``--quick``) and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
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
import onnxruntime as ort  # noqa: E402
import redis  # noqa: E402
import uvloop  # noqa: E402

from benchmarks._common import environment, near_cache_counts, tokenless_environ, write_results  # noqa: E402
from benchmarks._processes import start, stop, wait_ready  # noqa: E402
from benchmarks.loadgen.core import (  # noqa: E402
    MODEL_INFER,
    PREDICT,
    interleaved,
    model_infer_requests,
    predict_requests,
    send_each,
)
from benchmarks.targets import serving_targets  # noqa: E402
from clients.sdk.inference import build_predict_request  # noqa: E402
from control_plane.features.online_writer import OnlineWriter  # noqa: E402
from data_plane.models.spec import dump_model_config  # noqa: E402
from data_plane.registry_watch import save_snapshot  # noqa: E402
from tests.support import onnx_models  # noqa: E402
from tests.support.redis_server import RedisServer, free_port  # noqa: E402
from tests.unit.data_plane.registry_builders import entity, floats, snapshot, view, writable  # noqa: E402

MLSERVER_VENV = ROOT / ".venv-bench-mlserver"
LEVELS = (1, 8, 32, 64)
SLICE_S = 1.0  # seconds per measured slice (each after a 0.3 s warm-up)
FEATURES = 500
ENTITIES = 10_000


Target = tuple[str, int, str, list[bytes], tuple[int, ...]]  # (key, port, method, requests, levels)


def _measure(targets: list[Target], rounds: int, slice_s: float) -> dict[str, dict[str, Any]]:
    """Every level, the servers in turn (``loadgen.interleaved``): each server's figure at a level is its
    ``rounds`` slices of ``slice_s`` pooled, taken between the other servers' slices."""
    results: dict[str, dict[str, Any]] = {key: {} for key, *_ in targets}
    for level in LEVELS:
        at_level = [t for t in targets if level in t[4]]
        runs = uvloop.run(
            interleaved(
                [(f"127.0.0.1:{port}", m, reqs) for _, port, m, reqs, _ in at_level], level, slice_s, rounds
            )
        )
        for (key, *_), run in zip(at_level, runs, strict=True):
            results[key][str(level)] = run.summary()
            print(f"    {key:<18} c={level:<3} {run.throughput_rps:8.0f} req/s  p50 {run.p50_ms:6.2f} ms  "
                  f"p99 {run.p99_ms:6.2f} ms  errors {run.errors}", flush=True)  # fmt: skip
    return results


def _in_process_ort(model_path: Path, seconds: float) -> dict[str, Any]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
    out: dict[str, Any] = {}
    for batch in (1, 32):
        x = np.random.default_rng(0).standard_normal((batch, 512)).astype(np.float32)
        for _ in range(100):
            session.run(None, {"input": x})
        runs = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            for _ in range(50):
                session.run(None, {"input": x})
            runs += 50
        elapsed = time.perf_counter() - started
        out[f"batch_{batch}"] = {"rows_per_s": runs * batch / elapsed, "latency_us": elapsed / runs * 1e6}
        print(f"    batch {batch:<3} {runs * batch / elapsed:10.0f} rows/s", flush=True)
    return out


def _start_mlserver(work: Path, model_path: Path, batching: bool) -> tuple[subprocess.Popen[bytes], int]:
    folder = work / ("mlserver-batching" if batching else "mlserver")
    model_dir = folder / "mlp"
    model_dir.mkdir(parents=True)
    shutil.copy(ROOT / "benchmarks" / "mlserver_onnx_runtime.py", model_dir / "mlserver_onnx_runtime.py")
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    settings = {"grpc_port": grpc_port, "http_port": http_port, "metrics_port": metrics_port,
                "parallel_workers": 0, "debug": False, "host": "127.0.0.1"}  # fmt: skip
    (folder / "settings.json").write_text(json.dumps(settings))
    model_settings: dict[str, Any] = {
        "name": "mlp",
        "implementation": "mlserver_onnx_runtime.OnnxModel",
        "parameters": {"uri": str(model_path)},
    }
    if batching:
        model_settings.update(max_batch_size=32, max_batch_time=0.0005)
    (model_dir / "model-settings.json").write_text(json.dumps(model_settings))
    env = {**os.environ, "PYTHONPATH": str(model_dir)}
    process = subprocess.Popen(
        [str(MLSERVER_VENV / "bin" / "mlserver"), "start", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=folder,
    )  # fmt: skip
    return process, grpc_port


def _prepare(work: Path, redis_url: str) -> dict[str, Path]:
    models = work / "models"
    mlp = onnx_models.save(onnx_models.mlp(), models / "mlp.onnx", "mlp", warmup_requests=20)
    ranker = onnx_models.save(
        onnx_models.mlp(input_size=FEATURES), models / "ranker.onnx", "ranker", warmup_requests=20,
        feature_refs=("bench_features",),
    )  # fmt: skip
    config = work / "models.json"
    dump_model_config([mlp, ranker], config)
    fv = view("bench_features", floats(FEATURES), entity="entity")
    snap = snapshot(fv, entities=[entity("entity", (("entity_id", "int64"),))])
    snapshot_path = work / "registry_snapshot.pb"
    save_snapshot(snapshot_path, snap.SerializeToString())
    values = np.random.default_rng(1).standard_normal((ENTITIES, FEATURES)).astype(np.float32)
    OnlineWriter(redis.Redis.from_url(redis_url)).write(
        writable(fv), [[str(i)] for i in range(ENTITIES)], values, time.time_ns() // 1000
    )
    return {"config": config, "snapshot": snapshot_path, "mlp": models / "mlp.onnx"}


def _data_plane(
    paths: dict[str, Path], redis_url: str, work: Path, name: str, *extra: str, workers: int = 1
) -> tuple[subprocess.Popen[str], int]:
    """A data plane in its default configuration but for ``extra`` flags."""
    args = [
        sys.executable, "-m", "data_plane", "--listen", "127.0.0.1:0", "--redis-url", redis_url,
        "--control-plane", f"127.0.0.1:{free_port()}", "--snapshot-path", str(paths["snapshot"]),
        "--model-config", str(paths["config"]), "--prediction-log-sample-rate", "0.01",
        "--workers", str(workers), *extra,
    ]  # fmt: skip
    env = {**tokenless_environ(), "AETHER_HOME": str(work / f"home-{name}"), "PYTHONPATH": str(ROOT)}
    return start(args, "aether data plane listening on", env)


def _near_cache_summary(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    hits = after.get("hits", 0.0) - before.get("hits", 0.0)
    misses = after.get("misses", 0.0) - before.get("misses", 0.0)
    return {
        "hits": int(hits),
        "misses": int(misses),
        "hit_ratio": round(hits / (hits + misses), 4) if hits + misses else None,
        "note": "after one Predict per entity before the slices (10,000 entities, 20 MB of blobs, within "
        "the default 64 MiB cache)",
    }


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _against_floor_with_inference(r: dict[str, Any]) -> dict[str, float]:
    """Not targets: how the throughput splits. ``floor_with_inference / floor`` is what running the model
    per request in a Python gRPC server costs; ``model_infer / floor_with_inference`` is what the data
    plane's serving logic (validation, leases, batching, metrics) costs on top."""
    out: dict[str, float] = {}
    for level in ("8", "32"):
        ort_floor = r["floor_with_inference"][level]["throughput_rps"]
        out[f"floor_with_inference/floor c={level}"] = round(
            _ratio(ort_floor, r["floor"][level]["throughput_rps"]), 3
        )
        out[f"model_infer/floor_with_inference c={level}"] = round(
            _ratio(r["model_infer"][level]["throughput_rps"], ort_floor), 3
        )
    return out


def _without_near_cache(r: dict[str, Any]) -> dict[str, float]:
    """Not targets: the Predict ratios of the data plane with its near cache off (every read an MGET),
    for comparison with the judged ones (default configuration)."""
    off, floor = r["predict_near_cache_off"], r["floor"]
    return {
        "Predict c=1 p99 / floor p99": round(_ratio(off["1"]["p99_ms"], floor["1"]["p99_ms"]), 3),
        "Predict c=32 throughput / floor": round(
            _ratio(off["32"]["throughput_rps"], floor["32"]["throughput_rps"]), 3
        ),
    }


def _table(r: dict[str, Any], targets: list[dict[str, Any]], mlserver: str) -> None:
    print("\nthroughput req/s (p99 ms) by concurrency")
    print(f"{'server':<28}" + "".join(f"{'c=' + str(c):>20}" for c in LEVELS))
    for key, label in [
        ("floor", "bare grpc.aio floor"),
        ("floor_with_inference", "floor + ONNX Runtime"),
        ("model_infer", "aether ModelInfer"),
        ("predict", "aether Predict (500 feat.)"),
        ("predict_near_cache_off", "  near cache off"),
        ("mlserver", f"MLServer {mlserver} (no batch)"),
        ("mlserver_batching", f"MLServer {mlserver} (adaptive)"),
    ]:
        if key in r:
            cells = "".join(
                f"{r[key][str(c)]['throughput_rps']:>11.0f} ({r[key][str(c)]['p99_ms']:5.1f})" for c in LEVELS
            )
            print(f"{label:<28}{cells}")
    for name, ratio in r["against_floor_with_inference"].items():
        print(f"{name}: {ratio:.2f}")
    cache = r["near_cache"]
    print(
        f"near cache during the slices (warm-ups included): {cache['hits']:,} hits, "
        f"{cache['misses']:,} misses"
    )
    for name, ratio in r["near_cache_off"].items():
        print(f"near cache off, {name}: {ratio:.3g}")
    if "workers_2" in r:
        for level, scaling in r["workers_scaling"].items():
            print(f"ModelInfer 1→2 workers at c={level}: {scaling:.2f}×")
    print()
    for t in targets:
        state = {True: "MET ", False: "MISS", None: "N/A "}[t["met"]]
        print(f"{state} {t['target']}: {t['value']} (bound {t['bound']}) {t.get('reason', '')}".rstrip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 slices per level instead of 5")
    parser.add_argument("--no-mlserver", action="store_true", help="skip the MLServer baselines")
    args = parser.parse_args()
    rounds = 2 if args.quick else 5
    results: dict[str, Any] = {}
    redis_server = RedisServer()
    redis_server.start()
    with tempfile.TemporaryDirectory(prefix="aether-serving-") as tmp:
        work = Path(tmp)
        paths = _prepare(work, redis_server.url)
        infer_requests = model_infer_requests("mlp", 512)
        print("in-process ONNX Runtime", flush=True)
        results["onnxruntime_in_process"] = _in_process_ort(paths["mlp"], 1.0 if args.quick else 2.0)
        entities = [str(i) for i in range(ENTITIES)]
        # Entities drawn from all 10,000, so that what the near cache holds is the whole store, not a
        # handful of hot keys; every entity is read once before the measurement (see below).
        predicts = predict_requests("ranker", entities, "entity_id", count=ENTITIES)
        every_entity = [
            build_predict_request("ranker", [{"entity_id": e}]).SerializeToString() for e in entities
        ]
        with contextlib.ExitStack() as servers:
            floor, floor_port = start([sys.executable, "-m", "benchmarks.floor_server"], "floor listening on")
            servers.callback(stop, floor)
            floor_ort, floor_ort_port = start(
                [sys.executable, "-m", "benchmarks.floor_server", "--model", str(paths["mlp"])],
                "floor listening on",
            )
            servers.callback(stop, floor_ort)
            metrics_port = free_port()
            one, port = _data_plane(
                paths, redis_server.url, work, "one", "--metrics-listen", f"127.0.0.1:{metrics_port}"
            )
            servers.callback(stop, one)
            uncached, port_uncached = _data_plane(
                paths, redis_server.url, work, "uncached", "--near-cache-mb", "0"
            )
            servers.callback(stop, uncached)
            two, port_2 = _data_plane(paths, redis_server.url, work, "two", workers=2)
            servers.callback(stop, two)
            targets: list[Target] = [
                ("floor", floor_port, MODEL_INFER, infer_requests, LEVELS),
                ("floor_with_inference", floor_ort_port, MODEL_INFER, infer_requests, LEVELS),
                ("model_infer", port, MODEL_INFER, infer_requests, LEVELS),
                ("predict", port, PREDICT, predicts, LEVELS),
                ("predict_near_cache_off", port_uncached, PREDICT, predicts, LEVELS),
                ("workers_2", port_2, MODEL_INFER, infer_requests, (32, 64)),
            ]
            if not args.no_mlserver and (MLSERVER_VENV / "bin" / "mlserver").exists():
                for key, batching in (("mlserver", False), ("mlserver_batching", True)):
                    process, mlserver_port = _start_mlserver(work, paths["mlp"], batching)
                    servers.callback(stop, process, signal.SIGINT)  # MLServer stops on SIGINT
                    targets.append((key, mlserver_port, MODEL_INFER, infer_requests, LEVELS))
            for key, server_port, *_ in targets:
                if not key.startswith("floor"):  # the floors answer ModelInfer alone, from their first line
                    wait_ready(server_port, "mlp", timeout_s=120)
            # Both Predict servers read every entity once first: the steady state of a data plane serving
            # a set of entities that fits its near cache (the cache-off server has nothing to keep).
            for warm_port in (port, port_uncached):
                failed = uvloop.run(send_each(f"127.0.0.1:{warm_port}", PREDICT, every_entity, 16))
                if failed:
                    raise SystemExit(f"{failed} Predict calls failed while reading every entity once")
            print(
                f"servers up; {rounds} interleaved slices of {SLICE_S:.0f} s per server and level", flush=True
            )
            cache_before = near_cache_counts(metrics_port)
            results.update(_measure(targets, rounds, SLICE_S))
            results["near_cache"] = _near_cache_summary(cache_before, near_cache_counts(metrics_port))
        two_workers, one_worker = results["workers_2"], results["model_infer"]
        results["workers_scaling"] = {
            str(c): _ratio(two_workers[str(c)]["throughput_rps"], one_worker[str(c)]["throughput_rps"])
            for c in (32, 64)
        }
    redis_server.close()
    results["against_floor_with_inference"] = _against_floor_with_inference(results)
    results["near_cache_off"] = _without_near_cache(results)
    verdicts = serving_targets(results, quick=args.quick)
    env = environment(["grpcio", "protobuf", "numpy", "onnxruntime", "uvloop", "hiredis"])
    mlserver_version = subprocess.run(
        [str(MLSERVER_VENV / "bin" / "python"), "-c", "import mlserver; print(mlserver.__version__)"],
        capture_output=True, text=True, check=False,
    ).stdout.strip() if (MLSERVER_VENV / "bin" / "python").exists() else None  # fmt: skip
    env["versions"]["mlserver"] = mlserver_version or None
    _table(results, verdicts, mlserver_version or "?")
    path = write_results(
        "serving",
        {
            **env,
            "command": "python benchmarks/serving.py" + (" --quick" if args.quick else ""),
            "quick": args.quick,
            "duration_s_per_level": rounds * SLICE_S,
            "measurement": f"servers interleaved: {rounds} slices of {SLICE_S:.0f} s per server and level",
            "load_generator": "benchmarks/loadgen: grpc.aio closed loop, pre-serialized, same machine",
            "model": "MLP float32 [batch,512]->256->64->1 ReLU; Predict: [batch,500], 500-feature fetch",
            "results": results,
            "targets": verdicts,
        },
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
