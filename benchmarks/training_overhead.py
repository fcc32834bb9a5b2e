"""Training SDK overhead: the built-in trainer's epoch with the SDK against a bare torch loop.

One command (from the repository root):

    .venv/bin/python -m benchmarks.training_overhead

Workload (defaults): a synthetic regression set of 100,000 rows × 32 float features (80% trained on),
the built-in trainer's MLP (hidden 128, 64; Adam; batch 256; one torch thread, deterministic). Two
models train side by side in the same process on the same tensors, one epoch each in turn:

* **bare**: the trainer's epoch function (``train_one_epoch`` + the LR scheduler step) — no metrics, no
  checkpoints;
* **sdk**: the trainer's ``run_epoch`` (what ``fit`` runs each epoch) with a real
  :class:`TrainingContext` against a real control plane (SQLite, gRPC on loopback, in this process):
  ``log_metrics`` every epoch through the tracking shipper and ``checkpoint`` every epoch (model, Adam,
  scheduler and every RNG state, checksummed, temp file + fsync + rename + folder fsync, keep-last-3
  pruning). Held-out evaluation is off (``eval_every=0``): it is the trainer's work, not the SDK's.

Other processes share this 2-core machine and epoch times swing by 2-10× when they run, so the epochs
are *paired*: each bare epoch is timed next to an SDK epoch (the order alternates, ABBA), and the
overhead is the median over pairs of ``sdk / bare − 1`` (the first pairs are warm-up). Also reported:
the time measured inside the SDK calls per epoch, which load noise barely touches. Target: ≤ 3%. The
JSON (``benchmarks/results/training_overhead.json``) records every pair, the machine, versions and the
load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks._common import environment, write_results
from clients.sdk.tracking import TrackingClient
from control_plane.jobs.launch_env import LaunchEnv
from control_plane.server import ControlPlaneServer, start_server
from control_plane.settings import ControlPlaneSettings
from control_plane.training.checkpoint import Checkpoint, TrainingState
from control_plane.training.context import TrainingContext
from control_plane.training.spec import TrainingSpec
from control_plane.training.trainer.config import TrainerConfig
from control_plane.training.trainer.data import PreparedData
from control_plane.training.trainer.loop import Trainee, build, run_epoch, train_one_epoch

TARGET_PCT = 3.0


class Plane:
    """A control plane on its own event loop in a background thread."""

    def __init__(self, home: Path) -> None:
        settings = ControlPlaneSettings(
            home=home, db_url=f"sqlite:///{home / 'aether.db'}", listen_addr="127.0.0.1:0"
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: ControlPlaneServer = asyncio.run_coroutine_threadsafe(
            start_server(settings), self._loop
        ).result(60)
        self.address = self._server.address

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)


class TimedHooks:
    """The SDK's hooks (a real TrainingContext), timing the calls and stamping the end of each epoch."""

    def __init__(self, ctx: TrainingContext) -> None:
        self.ctx = ctx
        self.sdk_seconds = 0.0
        self.epoch_ends: list[float] = []
        self.checkpoint_bytes = 0

    @property
    def log_per_batch(self) -> bool:
        return False

    def log_metrics(self, epoch: int, values: Mapping[str, float] | None = None, /, **metrics: float) -> None:
        start = time.perf_counter()
        self.ctx.log_metrics(epoch, values, **metrics)
        self.sdk_seconds += time.perf_counter() - start

    def log_batch_metrics(
        self, step: int, values: Mapping[str, float] | None = None, /, **metrics: float
    ) -> None:
        self.ctx.log_batch_metrics(step, values, **metrics)

    def checkpoint(self, state: TrainingState) -> Path:
        start = time.perf_counter()
        path = self.ctx.checkpoint(state)
        assert path is not None  # the benchmark runs as one process: rank 0
        end = time.perf_counter()
        self.sdk_seconds += end - start
        self.epoch_ends.append(end)
        self.checkpoint_bytes = path.stat().st_size
        return path

    def resume(self) -> Checkpoint | None:
        return self.ctx.resume()


def synthetic(rows: int, features: int, seed: int = 0) -> PreparedData:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    weights = rng.normal(size=features).astype(np.float32)
    y = (x @ weights + np.sin(x[:, 0]) + rng.normal(0, 0.1, rows)).astype(np.float32)[:, None]
    n_train = int(rows * 0.8)
    return PreparedData(
        x_train=torch.from_numpy(x[:n_train]),
        y_train=torch.from_numpy(y[:n_train]),
        x_test=torch.from_numpy(x[n_train:]),
        y_test=torch.from_numpy(y[n_train:]),
        mean=x[:n_train].mean(axis=0),
        std=x[:n_train].std(axis=0),
        classes=(),
        feature_names=tuple(f"synthetic@1:f{i}" for i in range(features)),
    )


def bare_epoch(trainee: Trainee, config: TrainerConfig, data: PreparedData) -> float:
    assert trainee.state.scheduler is not None
    start = time.perf_counter()
    train_one_epoch(trainee, data.x_train, data.y_train, config.batch_size)
    trainee.state.scheduler.step()
    return time.perf_counter() - start


def sdk_epoch(trainee: Trainee, config: TrainerConfig, data: PreparedData, hooks: TimedHooks) -> float:
    start = time.perf_counter()
    run_epoch(trainee, config, data, hooks)
    return time.perf_counter() - start


def open_context(plane: Plane, folder: Path, run_id: str) -> TrainingContext:
    spec_path = folder / "spec.json"
    spec_path.write_text('{"name": "overhead"}')
    launch = LaunchEnv("bench", 1, spec_path, folder / "checkpoints", plane.address, "overhead", run_id)
    ctx = TrainingContext(launch, TrainingSpec(name="overhead"))
    ctx.metrics  # noqa: B018 - connect before the clock starts, as a job does at start-up
    return ctx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=24, help="epochs of each model")
    parser.add_argument("--warmup", type=int, default=2, help="first pairs left out")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    data = synthetic(args.rows, args.features)
    config = TrainerConfig(
        task="regression",
        label="y",
        hidden=(128, 64),
        epochs=args.epochs,
        batch_size=args.batch_size,
        threads=args.threads,
        eval_every=0,
    )
    load_before = os.getloadavg()
    pairs: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="aether-overhead-") as tmp:
        plane = Plane(Path(tmp) / "home")
        try:
            with TrackingClient(plane.address) as tracking:
                experiment = tracking.get_or_create_experiment("overhead").experiment_id
                run_id = tracking.create_run(experiment, "overhead").run_id
            ctx = open_context(plane, Path(tmp), run_id)
            hooks = TimedHooks(ctx)
            bare, sdk = build(config, data), build(config, data)
            for epoch in range(config.epochs):
                if epoch % 2 == 0:
                    pair = (bare_epoch(bare, config, data), sdk_epoch(sdk, config, data, hooks))
                else:
                    sdk_s = sdk_epoch(sdk, config, data, hooks)
                    pair = (bare_epoch(bare, config, data), sdk_s)
                pairs.append(pair)
            ctx.metrics.flush(30)
            shipped, dropped = ctx.metrics.client.shipped_points, ctx.metrics.dropped_points
            ctx.close()
        finally:
            plane.stop()
    load_after = os.getloadavg()

    measured = pairs[args.warmup :]
    ratios = [sdk_s / bare_s - 1.0 for bare_s, sdk_s in measured]
    overhead_pct = 100.0 * statistics.median(ratios)
    bare_ms = statistics.median(b for b, _ in measured) * 1000
    sdk_ms = statistics.median(s for _, s in measured) * 1000
    call_ms = hooks.sdk_seconds / config.epochs * 1000
    call_pct = 100.0 * call_ms / bare_ms
    print(f"{'variant':<8} {'median epoch':>13} {'epochs':>7}")
    print(f"{'bare':<8} {bare_ms:>10.1f} ms {len(measured):>7}")
    print(f"{'sdk':<8} {sdk_ms:>10.1f} ms {len(measured):>7}")
    print(f"overhead (median of paired epochs): {overhead_pct:+.2f}%  (target <= {TARGET_PCT}%)")
    print(f"time inside SDK calls per epoch:    {call_ms:.2f} ms = {call_pct:.2f}% of a bare epoch")
    print(
        f"checkpoint {hooks.checkpoint_bytes / 1024:.0f} KiB;"
        f" metric points shipped {shipped}, dropped {dropped}"
    )
    print(f"load average {load_before[0]:.2f} -> {load_after[0]:.2f}")
    results: dict[str, Any] = {
        "workload": {
            "rows": args.rows,
            "train_rows": int(data.x_train.shape[0]),
            "features": args.features,
            "hidden": list(config.hidden),
            "batch_size": args.batch_size,
            "steps_per_epoch": -(-int(data.x_train.shape[0]) // args.batch_size),
            "epochs": args.epochs,
            "warmup_pairs": args.warmup,
            "torch_threads": args.threads,
            "sdk_per_epoch": "log_metrics (train_loss, lr) + checkpoint (fsync, keep last 3)",
        },
        "bare_epoch_ms_median": bare_ms,
        "sdk_epoch_ms_median": sdk_ms,
        "overhead_pct": overhead_pct,
        "overhead_statistic": "median over paired epochs of sdk/bare - 1",
        "sdk_call_ms_per_epoch": call_ms,
        "sdk_call_pct_of_bare_epoch": call_pct,
        "checkpoint_bytes": hooks.checkpoint_bytes,
        "metric_points_shipped": shipped,
        "metric_points_dropped": dropped,
        "pairs_ms": [[b * 1000, s * 1000] for b, s in pairs],
        "target_pct": TARGET_PCT,
        "meets_target": overhead_pct <= TARGET_PCT,
        "load_average_before": list(load_before),
        "load_average_after": list(load_after),
        **environment(["torch", "numpy", "grpcio", "onnxruntime"]),
    }
    print(f"wrote {write_results('training_overhead', results)}")


if __name__ == "__main__":
    main()
