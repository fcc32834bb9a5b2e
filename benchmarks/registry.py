"""Model registry latency: get and list over gRPC with a realistic registry.

    .venv/bin/python benchmarks/registry.py [--models 100] [--versions 20] [--calls 2000] [--db-url URL]

Starts a control plane serving the model registry as its own process (a fresh SQLite file by default,
or ``--db-url``), registers ``models`` x ``versions`` versions through the SDK (each with a signature,
metrics, hyperparameters and two aliases per model), then times from one synchronous SDK client, one
call at a time, on random models and versions:

* ``GetRegisteredModel``, ``GetModelVersion`` (by number), ``GetModelVersion`` (by alias);
* ``ListModelVersions`` (all ``versions`` of a model in one page);
* ``ListRegisteredModels`` (one page of 100 models).

Prints a table against the issue-6 target (p99 <= 5 ms for get and list) and writes
``benchmarks/results/registry.json`` with the machine and versions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import environment, percentiles_ms, write_results
from clients.sdk.models import ModelRegistryClient, signature

TARGET_P99_MS = 5.0
READY = "aether control plane listening on "


async def _serve(home: Path, db_url: str) -> None:
    from control_plane.api.model_registry import services
    from control_plane.server import start_server
    from control_plane.settings import ControlPlaneSettings

    settings = ControlPlaneSettings(home=home, db_url=db_url, listen_addr="127.0.0.1:0")
    server = await start_server(settings, services=services())
    print(f"{READY}{server.address}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def start_control_plane(home: Path, db_url: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--home", str(home), "--db-url", db_url],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith(READY):
        process.kill()
        raise SystemExit(f"control plane did not start: {line!r}")
    return process, line[len(READY) :].strip()


def populate(client: ModelRegistryClient, models: int, versions: int, artifact: Path) -> float:
    sha256 = client.artifacts.upload_file(artifact).sha256
    sig = signature(
        [("features", "float32", (-1, 32)), ("segment", "int64", (-1,))], [("score", "float32", (-1, 1))]
    )
    started = time.perf_counter()
    for m in range(models):
        name = f"model-{m:03d}"
        client.create_model(name, f"benchmark model {m}", {"team": f"team-{m % 7}"})
        for v in range(versions):
            client.register_version(
                name,
                artifact_sha256=sha256,
                signature=sig,
                dataset_hash=f"{m:08x}{v:08x}" * 4,
                hyperparameters={"lr": "0.01", "depth": str(4 + v % 5), "epochs": "20"},
                metrics={"rmse": 40.0 + v, "mae": 30.0 + v / 2, "auc": 0.8},
                git_commit=f"{v:07x}",
                create_model=False,
            )
        client.set_alias(name, "champion", versions - 1)
        client.set_alias(name, "challenger", versions)
    return time.perf_counter() - started


def timed(calls: int, call: Callable[[int], Any]) -> list[float]:
    for i in range(min(200, calls)):  # warm-up: connections, statement caches
        call(i)
    samples = []
    for i in range(calls):
        started = time.perf_counter()
        call(i)
        samples.append(time.perf_counter() - started)
    return samples


def measure(
    client: ModelRegistryClient, models: int, versions: int, calls: int
) -> dict[str, dict[str, float]]:
    rng = random.Random(6)
    names = [f"model-{rng.randrange(models):03d}" for _ in range(calls)]
    numbers = [rng.randrange(1, versions + 1) for _ in range(calls)]
    operations: dict[str, Callable[[int], Any]] = {
        "GetRegisteredModel": lambda i: client.get_model(names[i]),
        "GetModelVersion": lambda i: client.get_version(names[i], numbers[i]),
        "GetModelVersion (alias)": lambda i: client.get_by_alias(names[i], "champion"),
        f"ListModelVersions ({versions})": lambda i: client.list_versions_page(names[i], page_size=versions),
        "ListRegisteredModels (100)": lambda i: client.list_models_page(page_size=100),
    }
    return {label: percentiles_ms(timed(calls, call)) for label, call in operations.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--versions", type=int, default=20)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--db-url", default="", help="metadata database (default: a fresh SQLite file)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.home, args.db_url))
        return

    with tempfile.TemporaryDirectory(prefix="aether-registry-bench-") as scratch:
        home = Path(scratch)
        db_url = args.db_url or f"sqlite:///{home / 'aether.db'}"
        artifact = home / "model.onnx"
        artifact.write_bytes(os.urandom(256 * 1024))
        load_before = os.getloadavg()
        process, address = start_control_plane(home, db_url)
        try:
            with ModelRegistryClient(address, timeout=30) as client:
                populate_s = populate(client, args.models, args.versions, artifact)
                results = measure(client, args.models, args.versions, args.calls)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        load_after = os.getloadavg()

    registrations = args.models * args.versions
    print(f"registry: {args.models} models x {args.versions} versions on {db_url.split(':', 1)[0]}")
    print(f"registered {registrations} versions in {populate_s:.1f} s ({registrations / populate_s:.0f}/s)\n")
    print(f"{'operation':32} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9}  target p99 <= {TARGET_P99_MS} ms")
    for label, figures in results.items():
        verdict = "ok" if figures["p99_ms"] <= TARGET_P99_MS else "MISSED"
        print(
            f"{label:32} {figures['p50_ms']:8.2f} {figures['p99_ms']:8.2f}"
            f" {figures['p99_9_ms']:9.2f}  {verdict}"
        )
    path = write_results(
        "registry",
        {
            **environment(["grpcio", "sqlalchemy", "protobuf"]),
            "workload": {
                "models": args.models,
                "versions_per_model": args.versions,
                "calls_per_operation": args.calls,
                "database": db_url.split(":", 1)[0],
                "client": "clients.sdk.models.ModelRegistryClient (sync), one call at a time",
                "server": "control plane in its own process",
            },
            "registration": {"versions": registrations, "seconds": populate_s},
            "latency": results,
            "target_p99_ms": TARGET_P99_MS,
            "target_met": all(figures["p99_ms"] <= TARGET_P99_MS for figures in results.values()),
            "load_average": {"before": load_before, "after": load_after},
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
