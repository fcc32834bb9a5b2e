"""Experiment-tracking benchmark: logging throughput through the SDK, and compare/search latency, against
a real control plane in a separate process on a SQLite file; the same logging workload through MLflow's
client (``log_batch``) against a local MLflow tracking server on a SQLite file, in the same run.

    .venv/bin/python benchmarks/tracking.py            # 1M points (1,000 runs x 10 metrics x 100 steps),
                                                       # search over 10,000 runs, MLflow on 50,000 points
    .venv/bin/python benchmarks/tracking.py --quick    # 100k points, 1,000 runs searched, MLflow on 10k

MLflow is installed only in ``.venv-bench-mlflow`` (``python -m venv .venv-bench-mlflow &&
.venv-bench-mlflow/bin/pip install mlflow``) and driven from a subprocess; without it the MLflow rows say
so. MLflow needs ~500 s for 1M points here, so it logs a slice of the same shape (fewer runs), and the
table states both sizes. Results go to ``benchmarks/results/tracking.json`` with the machine and versions.

Aether's logging figure is wall time from the first ``start_run`` to the final flush returning (every
point committed): run creation, logging, run ends included, with MLflow's figure measured the same way.
Runs are ended with ``close(wait=False)`` (the end is queued behind the run's points) so that a sweep does
not wait on the network; the "with-block" row ends each run waiting for its data to be committed."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import environment, percentiles_ms, write_results
from benchmarks.targets import tracking_targets
from clients.aether.v1 import tracking_pb2 as pb
from clients.sdk.tracking import TrackingClient

ROOT = Path(__file__).resolve().parent.parent
MLFLOW_PYTHON = ROOT / ".venv-bench-mlflow" / "bin" / "python"
KEYS, STEPS = 10, 100


def serve(home: Path) -> None:
    """The control plane process: tracking service on a SQLite file in ``home``."""
    from control_plane.api.tracking import add_to_server
    from control_plane.server import start_server
    from control_plane.settings import ControlPlaneSettings

    async def run() -> None:
        settings = ControlPlaneSettings(
            home=home, db_url=f"sqlite:///{home / 'aether.db'}", listen_addr="127.0.0.1:0"
        )
        server = await start_server(settings, services=[add_to_server])
        print(server.address, flush=True)
        await server.wait_for_termination()

    asyncio.run(run())


@contextlib.contextmanager
def control_plane(home: Path) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve", str(home)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait(timeout=30)


def aether_logging(address: str, runs: int, *, wait_on_close: bool) -> dict[str, Any]:
    call_times: list[float] = []
    with TrackingClient(address, close_timeout_s=300) as client:
        experiment = f"logging-{time.time_ns()}"
        started = time.perf_counter()
        for index in range(runs):
            run = client.start_run(experiment, f"r{index}", params={"lr": index / 1000, "opt": "adam"})
            for step in range(STEPS):
                metrics = {f"m{k}": index * 0.001 + k + step * 0.01 for k in range(KEYS)}
                before = time.perf_counter()
                run.log_metrics(metrics, step=step)
                call_times.append(time.perf_counter() - before)
            run.close(wait=wait_on_close)
        flushed = client.flush(timeout=300)
        elapsed = time.perf_counter() - started
        dropped = client.dropped_points
        shipped = client.shipped_points
    latency = percentiles_ms(call_times)
    return {
        **shipped_rate(runs * KEYS * STEPS, shipped, dropped, flushed, elapsed),
        "runs": runs,
        "log_call_p50_us": latency["p50_ms"] * 1000,
        "log_call_p99_us": latency["p99_ms"] * 1000,
    }


class PointsLost(RuntimeError):
    """Logged points were dropped or not confirmed sent: a throughput over them would be made up."""


def shipped_rate(logged: int, shipped: int, dropped: int, flushed: bool, seconds: float) -> dict[str, Any]:
    """The logging figure counts what the server confirmed, not what was handed to the SDK; a run that
    lost points (buffer full, server unreachable) or whose flush timed out is a failed run, not a figure."""
    if not flushed or dropped or shipped != logged:
        raise PointsLost(
            f"{logged:,} points logged, {shipped:,} shipped, {dropped:,} dropped"
            + ("" if flushed else ", flush timed out")
        )
    return {
        "points": shipped,
        "seconds": seconds,
        "points_per_s": shipped / seconds,
        "shipped_points": shipped,
        "dropped_points": dropped,
    }


def populate_search(address: str, runs: int) -> str:
    """An experiment of ``runs`` finished runs, each with 10 metrics (3 steps) and 2 parameters, written
    500 runs per LogBatch (each batch starts its runs)."""
    with TrackingClient(address) as client:
        experiment = client.create_experiment(f"search-{time.time_ns()}").experiment_id
        batch: list[pb.RunBatch] = []
        for index in range(runs):
            params = {"lr": f"{(index % 10) / 100:.2f}", "opt": ("adam", "sgd", "rmsprop")[index % 3]}
            start = pb.RunStart(experiment_id=experiment, name=f"s{index}", params=params)
            values = [((index * 7919 + k * 104729) % 1000) / 1000 for k in range(KEYS)]
            series = [
                pb.MetricSeries(key=f"m{k}", values=[v + 0.2, v + 0.1, v], steps=[0, 1, 2])
                for k, v in enumerate(values)
            ]
            end = pb.RunEnd(status=pb.RUN_STATUS_FINISHED)
            batch.append(pb.RunBatch(run_id=uuid.uuid4().hex, start=start, metrics=series, end=end))
            if len(batch) == 500:
                client.log_batch(pb.LogBatchRequest(runs=batch))
                batch = []
        if batch:
            client.log_batch(pb.LogBatchRequest(runs=batch))
        return experiment


def search_latency(address: str, experiment_id: str, iterations: int) -> dict[str, Any]:
    query = {
        "metrics": ["m0", ("m1", "min"), "m2"],
        "params": ["lr", "opt"],
        "filter": 'metrics.m0 < 0.5 and params.opt = "adam"',
        "order_by": ["metrics.m1 desc"],
        "page_size": 50,
    }
    samples = []
    with TrackingClient(address) as client:
        first = client.compare_runs(experiment_id, **query)  # type: ignore[arg-type]
        for _ in range(iterations):
            before = time.perf_counter()
            client.compare_runs(experiment_id, **query)  # type: ignore[arg-type]
            samples.append(time.perf_counter() - before)
    return {
        "query": {k: v for k, v in query.items() if k != "metrics"},
        "matching": first.total_count,
        **percentiles_ms(samples),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mlflow_logging(runs: int, home: Path) -> dict[str, Any]:
    if not MLFLOW_PYTHON.exists():
        return {"skipped": f"no MLflow venv at {MLFLOW_PYTHON.parent.parent}"}
    port = _free_port()
    server = subprocess.Popen(
        [
            str(MLFLOW_PYTHON.parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
            "--default-artifact-root", str(home / "mlflow-artifacts"), "--workers", "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.5)
        time.sleep(2)  # the port opens before the app has imported everything
        driver = ROOT / "benchmarks" / "tracking_mlflow_driver.py"
        done = subprocess.run(
            [str(MLFLOW_PYTHON), str(driver), f"http://127.0.0.1:{port}", str(runs), str(KEYS), str(STEPS)],
            capture_output=True,
            text=True,
            timeout=1800,
            env={**os.environ, "MLFLOW_HTTP_REQUEST_TIMEOUT": "600"},
        )
        if done.returncode != 0:
            return {"error": done.stderr[-2000:]}
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return {**result, "runs": runs}
    finally:
        server.terminate()
        server.wait(timeout=30)


def _row(name: str, size: str, value: str, target: str = "") -> tuple[str, str, str, str]:
    return (name, size, value, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run (about a minute)")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--serve", metavar="HOME", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve))
        return
    log_runs, wait_runs, search_runs, mlflow_runs = (
        (100, 20, 1_000, 10) if args.quick else (1_000, 100, 10_000, 50)
    )

    # The machine is shared: the 1-minute load average around the run says how quiet it was.
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="aether-bench-tracking-") as folder:
        home = Path(folder)
        with control_plane(home / "aether") as address:
            pipelined = aether_logging(address, log_runs, wait_on_close=False)
            waiting = aether_logging(address, wait_runs, wait_on_close=True)
            experiment = populate_search(address, search_runs)
            search = search_latency(address, experiment, 200)
            search["runs"] = search_runs
        mlflow = {"skipped": "--skip-mlflow"} if args.skip_mlflow else mlflow_logging(mlflow_runs, home)

    speedup = pipelined["points_per_s"] / mlflow["points_per_s"] if "points_per_s" in mlflow else None
    pipelined_rate = f"{pipelined['points_per_s']:,.0f} points/s"
    call_latency = f"p50 {pipelined['log_call_p50_us']:.1f} us, p99 {pipelined['log_call_p99_us']:.1f} us"
    search_latency_text = f"p50 {search['p50_ms']:.1f} ms, p99 {search['p99_ms']:.1f} ms"
    rows = [
        _row("Aether SDK logging (pipelined run ends)", f"{pipelined['points']:,} points", pipelined_rate),
        _row(
            "Aether SDK logging (with-block, wait per run)",
            f"{waiting['points']:,} points",
            f"{waiting['points_per_s']:,.0f} points/s",
        ),
        _row("Aether log_metrics call (10 metrics)", f"{log_runs * STEPS:,} calls", call_latency),
        _row(
            "Aether compare (filter + sort, 50 rows)",
            f"{search_runs:,} runs",
            search_latency_text,
            "p99 <= 200 ms",
        ),
    ]
    if "points_per_s" in mlflow:
        rows.append(
            _row(
                f"MLflow {mlflow['mlflow']} log_batch",
                f"{mlflow['points']:,} points",
                f"{mlflow['points_per_s']:,.0f} points/s",
            )
        )
        rows.append(_row("Aether / MLflow logging throughput", "", f"{speedup:,.0f}x", ">= 100x"))
    else:
        rows.append(_row("MLflow log_batch", "-", str(mlflow.get("skipped") or mlflow.get("error", ""))[:80]))
    widths = [max(len(row[i]) for row in [("WHAT", "SIZE", "RESULT", "TARGET"), *rows]) for i in range(4)]
    for row in [("WHAT", "SIZE", "RESULT", "TARGET"), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())

    payload: dict[str, Any] = {
        **environment(["grpcio", "protobuf", "sqlalchemy", "numpy"]),
        "command": " ".join(["python benchmarks/tracking.py", *sys.argv[1:]]),
        "quick": args.quick,
        "database": "SQLite file (WAL), control plane in a separate process",
        "aether_logging_pipelined": pipelined,
        "aether_logging_with_block": waiting,
        "aether_compare": search,
        "mlflow_logging": mlflow,
        "speedup_vs_mlflow": speedup,
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
    }
    payload["targets"] = tracking_targets(payload)
    for t in payload["targets"]:
        state = {True: "MET ", False: "MISS", None: "N/A "}[t["met"]]
        print(f"{state} {t['target']}: {t['value']} (bound {t['bound']:g}) {t.get('reason', '')}".rstrip())
    path = write_results("tracking", payload)
    print(f"1-minute load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
