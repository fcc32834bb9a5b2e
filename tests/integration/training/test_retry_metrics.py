"""A retried attempt logs into the same tracking run as the attempts before it: each step of a metric
curve holds one point, whether the attempt before was killed before its first checkpoint (the retry
starts over from epoch 0) or after it (the retry replays the epochs since), and for every key it logs,
not only those its checkpoint saved."""

from __future__ import annotations

from pathlib import Path

import torch

from clients.sdk.tracking import TrackingClient
from control_plane.jobs.launch_env import LaunchEnv
from control_plane.jobs.spec import spec_from_mapping, spec_to_json
from control_plane.training.checkpoint import TrainingState
from control_plane.training.context import TrainingContext
from tests.integration.training.conftest import Plane


def attempt(plane: Plane, folder: Path, run_id: str, number: int) -> TrainingContext:
    spec_path = folder / "spec.json"
    spec_path.write_text(spec_to_json(spec_from_mapping({"name": "retry", "entrypoint": {"module": "x"}})))
    launch = LaunchEnv(
        job_id="j1",
        attempt=number,
        spec_path=spec_path,
        checkpoint_dir=folder / "checkpoints",
        control_plane_addr=plane.address,
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
