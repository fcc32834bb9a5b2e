"""The built-in trainer as a job with gpus 2, data-parallel under torchrun (2 ranks, gloo on the CPU): one
model trained on two disjoint halves of each epoch's rows, equal to the single-process run on the same
global batches; only rank 0 checkpoints, logs and registers; a rank killed mid-training fails the
attempt, and the retry resumes both ranks from rank 0's checkpoint.

One two-rank job and one single-process run, side by side, serve every test here (CI time)."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from google.protobuf import json_format

from clients.aether.v1 import jobs_pb2 as pb
from clients.sdk.jobs import JobsClient
from clients.sdk.models import ModelRegistryClient
from clients.sdk.tracking import TrackingClient
from control_plane.jobs.pool import DevicePool
from control_plane.training.checkpoint import CheckpointManager, load_payload
from tests.integration.training.conftest import FEATURES, Data, Job, Plane, make_job, materialize, start_plane
from tests.support.processes import find_process

EPOCHS = 10
ROWS = 400  # 80 held out, 320 to train on: 160 per rank, 5 steps of 32 + 32 rows an epoch
HYPERPARAMETERS = {
    "label": "y",
    "epochs": EPOCHS,
    "batch_size": 64,
    "hidden": [8],
    "lr": 0.01,
    "seed": 5,
    "log_every_batch": True,
}
STEPS = EPOCHS * 5
TRAINER = b"control_plane.training.trainer"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    # Two logical GPU slots named so that no CUDA device matches them: the ranks take the gloo path
    # even on a GPU host, as they do on this CPU-only one.
    yield from start_plane(tmp_path_factory, DevicePool(("cpu0", "cpu1"), "config"))


@pytest.fixture(scope="module")
def data(plane: Plane) -> Data:
    return materialize(plane, plane.home / "datasets", users=ROWS)


def rank_pid(job_id: str, rank: int) -> int | None:
    """The torchrun worker of ``rank`` of ``job_id``'s first attempt (not torchrun itself)."""
    wanted = {f"AETHER_JOB_ID={job_id}".encode(), b"AETHER_JOB_ATTEMPT=1", f"RANK={rank}".encode()}
    return find_process(wanted, lambda argv: TRAINER in argv and b"torch.distributed.run" not in argv)


@dataclass(frozen=True)
class Runs:
    job: pb.Job
    log: str
    single: Job

    def weights(self) -> dict[str, torch.Tensor]:
        return final_weights(Path(self.job.checkpoint_dir))


@pytest.fixture(scope="module")
def runs(plane: Plane, data: Data, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """A gpus 2 job through the Jobs service, its rank 1 SIGKILLed after rank 0's first checkpoint, and
    the same training as one process."""
    single = make_job(plane, data, tmp_path_factory.mktemp("jobs"), "single", HYPERPARAMETERS)
    reference = single.start(plane, 1)
    spec = {
        "name": "parallel",
        "entrypoint": {"module": TRAINER.decode()},
        "dataset": {"point_in_time": {"entity_rows_path": str(data.entity_rows_path), "features": ["stats"]}},
        "features": [f"stats@{data.version}:{f}" for f in FEATURES],
        "hyperparameters": HYPERPARAMETERS,
        "gpus": 2,
        "max_retries": 1,
        "checkpoint_every_epochs": 1,
    }
    deadline = time.monotonic() + 120
    with JobsClient(plane.address) as jobs:
        job = jobs.submit(spec)
        while (pid := rank_pid(job.job_id, 1)) is None:
            assert time.monotonic() < deadline and not jobs.get(job.job_id).finished_at_us
            time.sleep(0.01)
        checkpoints = Path(jobs.get(job.job_id).checkpoint_dir)
        while not any(checkpoints.glob("checkpoint-*.ckpt")):
            assert time.monotonic() < deadline, b"".join(jobs.logs(job.job_id)).decode()
            time.sleep(0.002)
        os.kill(pid, signal.SIGKILL)  # rank 1 dies mid-training
        while (done := jobs.get(job.job_id)).state not in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        log = b"".join(jobs.logs(job.job_id)).decode()
    assert done.state == pb.JOB_STATE_SUCCEEDED, log
    assert reference.wait(timeout=120) == 0, single.log()
    return Runs(done, log, single)


def final_weights(folder: Path) -> dict[str, torch.Tensor]:
    [*_, last] = CheckpointManager(folder).checkpoints()
    payload = load_payload(last)
    assert (payload["epoch"], payload["step"]) == (EPOCHS, STEPS)
    weights: dict[str, torch.Tensor] = payload["model"]
    return weights


def test_two_ranks_train_one_model_as_one_process_would(plane: Plane, runs: Runs) -> None:
    log = runs.log
    # Each rank trained on its half of the rows (World.shard: disjoint, see the unit tests), half the
    # global batch per step.
    for rank in (0, 1):
        line = f"rank {rank}/2 on cpu: 160 of 320 training rows per epoch, 32 per step (effective batch 64)"
        assert log.count(line) == 2, log  # once per attempt
    # DDP's invariant, checked by the trainer itself: the replicas ended identical.
    digests = re.findall(r"rank (\d)/2: trained parameters sha256 ([0-9a-f]{64})", log)
    assert sorted(rank for rank, _ in digests) == ["0", "1"] and len({d for _, d in digests}) == 1
    # Averaged gradients of two half batches are the full batch's: the single-process weights, up to
    # the order of float additions.
    parallel, single = runs.weights(), final_weights(runs.single.checkpoint_dir)
    assert parallel.keys() == single.keys()
    for name, tensor in single.items():
        torch.testing.assert_close(parallel[name], tensor, rtol=1e-4, atol=1e-5, msg=name)

    # One writer: one checkpoint per epoch (two ranks writing would number them up to 2 x EPOCHS), one
    # model version, one point per step on each curve — and the curves are global (means over both
    # ranks' rows), so they match the single-process run's.
    names = [p.name for p in CheckpointManager(Path(runs.job.checkpoint_dir)).checkpoints()]
    assert names[-1] == f"checkpoint-{EPOCHS:08d}.ckpt"
    outputs = json_format.MessageToDict(runs.job.outputs)
    with ModelRegistryClient(plane.address) as models:
        assert [v.version for v in models.list_versions("parallel")] == [int(outputs["version"])] == [1]
    with TrackingClient(plane.address) as tracking:
        for key, steps in (("train_loss", range(EPOCHS)), ("batch/loss", range(1, STEPS + 1))):
            mine = tracking.metric_history(runs.job.run_id, key)
            theirs = tracking.metric_history(runs.single.run_id, key)
            assert list(mine.steps) == list(steps) == list(theirs.steps), key
            assert list(mine.values) == pytest.approx(list(theirs.values), rel=1e-4), key
    single_outputs = json.loads(runs.single.outputs_path.read_text())
    assert outputs["metrics"] == pytest.approx(single_outputs["metrics"], rel=1e-4)


def test_a_rank_that_dies_fails_the_attempt_and_both_ranks_resume(runs: Runs) -> None:
    log = runs.log
    assert runs.job.attempt == 2
    # torchrun ended the first attempt for the rank it lost, naming it.
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)", log) and "Signal 9 (SIGKILL)" in log, log
    resumed = re.findall(r"resumed from (checkpoint-\d{8}\.ckpt): epoch (\d+), step (\d+)", log)
    assert len(resumed) == 2 and len(set(resumed)) == 1, log  # both ranks, from the same checkpoint
    _, epoch, step = resumed[0]
    assert 0 < int(epoch) < EPOCHS and int(step) == int(epoch) * 5  # not from scratch, mid-training
