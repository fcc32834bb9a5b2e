"""A retried attempt logs into the same tracking run as the attempts before it: each step of a metric
curve holds one point, whether the attempt before was killed before its first checkpoint (the retry
starts over from epoch 0) or after it (the retry replays the epochs since), and for every key it logs,
not only those its checkpoint saved; per-batch curves too, for a real trainer SIGKILLed mid-run."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from clients.errors import Unavailable
from clients.sdk.tracking import TrackingClient
from control_plane.jobs.launch_env import LaunchEnv
from control_plane.jobs.spec import spec_from_mapping, spec_to_json
from control_plane.training.checkpoint import CheckpointManager, TrainingState
from control_plane.training.context import TrainingContext
from tests.integration.training.conftest import Data, Job, Plane, make_job


def attempt(plane: Plane, folder: Path, run_id: str, number: int, address: str = "") -> TrainingContext:
    """Attempt ``number`` of a job logging into ``run_id`` through ``address`` (default: the plane's)."""
    spec_path = folder / "spec.json"
    spec_path.write_text(spec_to_json(spec_from_mapping({"name": "retry", "entrypoint": {"module": "x"}})))
    launch = LaunchEnv(
        job_id="j1",
        attempt=number,
        spec_path=spec_path,
        checkpoint_dir=folder / "checkpoints",
        control_plane_addr=address or plane.address,
        tracking_experiment="retry-metrics",
        run_id=run_id,
    )
    return TrainingContext(launch, TrainingContext.from_env(launch.to_env()).spec)


def new_run(tracking: TrackingClient, name: str) -> str:
    run_id = tracking.start_run("retry-metrics", name).run_id
    tracking.flush(10)
    return run_id


def curve(tracking: TrackingClient, run_id: str, key: str) -> list[tuple[int, float]]:
    series = tracking.metric_history(run_id, key)
    return list(zip(series.steps, series.values, strict=True))


def test_a_retry_after_a_kill_before_any_checkpoint_logs_each_step_once(plane: Plane, tmp_path: Path) -> None:
    with TrackingClient(plane.address) as tracking:
        run_id = new_run(tracking, "no-checkpoint")
        first = attempt(plane, tmp_path, run_id, 1)
        for epoch in (0, 1):  # shipped, then the attempt dies before any checkpoint
            first.log_metrics(epoch, loss=10.0 + epoch)
        first.close()

        second = attempt(plane, tmp_path, run_id, 2)
        assert second.resume() is None  # starts over from epoch 0
        for epoch in range(4):
            second.log_metrics(epoch, loss=20.0 + epoch)
        second.close()
        # The points already on the server stay; the retry adds the epochs it was first to reach.
        assert curve(tracking, run_id, "loss") == [(0, 10.0), (1, 11.0), (2, 22.0), (3, 23.0)]


def test_a_resumed_attempt_looks_up_keys_its_checkpoint_did_not_save(plane: Plane, tmp_path: Path) -> None:
    with TrackingClient(plane.address) as tracking:
        run_id = new_run(tracking, "after-checkpoint")
        first = attempt(plane, tmp_path, run_id, 1)
        first.log_metrics(0, loss=1.0)
        first.checkpoint(TrainingState(torch.nn.Linear(1, 1), epoch=1))  # saves loss of epoch 0 only
        first.log_metrics(1, loss=0.5)
        first.log_metrics(1, val_loss=0.7)  # a key the checkpoint never saw
        first.close()

        second = attempt(plane, tmp_path, run_id, 2)
        resumed = second.resume()
        assert resumed is not None and resumed.epoch == 1
        second.log_metrics(1, loss=0.5, val_loss=0.7)  # the replayed epoch
        second.log_metrics(2, loss=0.25, val_loss=0.6)
        second.close()
        assert curve(tracking, run_id, "loss") == [(0, 1.0), (1, 0.5), (2, 0.25)]
        assert curve(tracking, run_id, "val_loss") == [(1, 0.7), (2, 0.6)]


def test_a_numpy_metric_value_leaves_checkpoints_a_retry_can_resume(plane: Plane, tmp_path: Path) -> None:
    # log_metrics kept np.float32 values as passed; they went into every checkpoint's epoch metrics,
    # torch.load(weights_only=True) refused them, and the retry set every checkpoint aside as corrupt and
    # started over from epoch 0.
    with TrackingClient(plane.address) as tracking:
        run_id = new_run(tracking, "numpy-metric")
        first = attempt(plane, tmp_path, run_id, 1)
        for epoch in (0, 1):
            first.log_metrics(epoch, loss=np.mean(np.array([0.5, 0.25], dtype=np.float32)) + epoch)
            first.log_metrics(epoch, val_loss=torch.tensor(0.25, requires_grad=True) * (epoch + 1))
            first.checkpoint(TrainingState(torch.nn.Linear(1, 1), epoch=epoch + 1))
        first.close()

        second = attempt(plane, tmp_path, run_id, 2)
        resumed = second.resume()
        second.close()
        assert resumed is not None and resumed.epoch == 2
        assert resumed.sdk["epoch_metrics"] == {
            0: {"loss": 0.375, "val_loss": 0.25},
            1: {"loss": 1.375, "val_loss": 0.5},
        }
        assert all(type(value) is float for value in resumed.sdk["epoch_metrics"][0].values())
        assert not list((tmp_path / "checkpoints").glob("*.corrupt"))
        assert curve(tracking, run_id, "loss") == [(0, 0.375), (1, 1.375)]
        assert curve(tracking, run_id, "val_loss") == [(0, 0.25), (1, 0.5)]


def shipped_batch_step(tracking: TrackingClient, run_id: str) -> int:
    """The highest step of ``batch/loss`` on the server (0 before any), from the run's summary."""
    summaries = {m.key: m for m in tracking.get_run(run_id).metrics}
    return int(summaries["batch/loss"].latest_step) if "batch/loss" in summaries else 0


def kill_once_shipped(
    job: Job, plane: Plane, number: int, tracking: TrackingClient, *, after_checkpoint: bool
) -> int:
    """Starts attempt ``number`` of the trainer and SIGKILLs the worker once the server holds batch points
    the next attempt will replay: any at all, or (``after_checkpoint``) those of an epoch past the first
    checkpoint. The step of the newest checkpoint when it died (0 for none)."""
    process = job.start(plane, number)
    try:
        deadline = time.monotonic() + 120
        past_step = 0
        first = job.checkpoint_dir / "checkpoint-00000001.ckpt"
        while True:
            assert process.poll() is None, f"attempt {number} ended before it was killed:\n{job.log()}"
            assert time.monotonic() < deadline, job.log()
            if after_checkpoint and not past_step and first.exists():
                checkpoint = CheckpointManager(job.checkpoint_dir).resume()
                assert checkpoint is not None
                past_step = checkpoint.step + checkpoint.step // checkpoint.epoch  # one epoch more
            if (past_step or not after_checkpoint) and shipped_batch_step(tracking, job.run_id) > past_step:
                break
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        process.kill()
    newest = CheckpointManager(job.checkpoint_dir).resume()
    return 0 if newest is None else newest.step


def test_batches_replayed_after_sigkills_are_not_logged_twice(
    plane: Plane, data: Data, tmp_path: Path
) -> None:
    # 100 epochs between checkpoints (~3 s of training): room to kill a worker after it shipped batch
    # points past a checkpoint and before its next one.
    epochs, every = 200, 100
    hyperparameters = {"task": "regression", "label": "y", "epochs": epochs, "batch_size": 32, "hidden": [8]}
    job = make_job(
        plane,
        data,
        tmp_path,
        "batch-replay",
        {**hyperparameters, "log_every_batch": True},
        checkpoint_every=every,
    )
    with TrackingClient(plane.address) as tracking:
        # Attempt 1 dies before its first checkpoint: attempt 2 starts over from step 1 and replays the
        # batches attempt 1 shipped.
        assert kill_once_shipped(job, plane, 1, tracking, after_checkpoint=False) == 0
        # Attempt 2 dies after its first checkpoint, with later batches on the server: attempt 3 resumes
        # from the checkpoint and replays those.
        checkpoint_step = kill_once_shipped(job, plane, 2, tracking, after_checkpoint=True)
        steps_per_epoch = checkpoint_step // every
        newest = CheckpointManager(job.checkpoint_dir).resume()
        assert newest is not None and newest.epoch == every, "attempt 2 must die before its next checkpoint"
        assert shipped_batch_step(tracking, job.run_id) > checkpoint_step
        assert job.run(plane, 3, timeout=300) == 0, job.log()
        assert f"resumed from checkpoint-00000001.ckpt: epoch {every}, step {checkpoint_step}" in job.log()
        batches = tracking.metric_history(job.run_id, "batch/loss")
        epoch_curve = tracking.metric_history(job.run_id, "train_loss")
    # One point per step on both curves.
    assert list(batches.steps) == list(range(1, epochs * steps_per_epoch + 1))
    assert list(epoch_curve.steps) == list(range(epochs))


@pytest.mark.parametrize("mended_at", ["checkpoint", "close"])
def test_a_resume_that_cannot_read_the_run_mends_its_curves_once_the_control_plane_answers(
    plane: Plane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mended_at: str
) -> None:
    # A resume sends again the checkpoint's epoch points the run lacks (points still buffered when the
    # previous attempt died). It did so only if its one read of the run succeeded: with the control plane
    # unreachable at the attempt's start, the mending was skipped for good and those points were lost.
    with TrackingClient(plane.address) as tracking:
        run_id = new_run(tracking, "unread")
        # Epoch 0's point never reaches the run (as if still buffered when the attempt was killed): this
        # attempt's control plane address leads nowhere. Its checkpoint holds the point.
        first = attempt(plane, tmp_path, run_id, 1, address="127.0.0.1:1")
        first.log_metrics(0, loss=1.0)
        first.checkpoint(TrainingState(torch.nn.Linear(1, 1), epoch=1))
        first.metrics.client.close_timeout_s = 0.1
        first.close()

        second = attempt(plane, tmp_path, run_id, 2)
        real_get_run = second.metrics.client.get_run
        calls: list[str] = []

        def unreachable_once(run: str) -> Any:
            calls.append(run)
            if len(calls) == 1:
                raise Unavailable("the control plane is restarting")
            return real_get_run(run)

        monkeypatch.setattr(second.metrics.client, "get_run", unreachable_once)
        with pytest.warns(UserWarning, match="could not read the run's metrics"):
            resumed = second.resume()
        assert resumed is not None and resumed.epoch == 1
        second.log_metrics(1, loss=0.5)
        if mended_at == "checkpoint":  # the control plane answers again
            second.checkpoint(TrainingState(torch.nn.Linear(1, 1), epoch=2))
        second.close()
        assert curve(tracking, run_id, "loss") == [(0, 1.0), (1, 0.5)]
