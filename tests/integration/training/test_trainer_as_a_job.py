"""The trainer submitted through the Jobs service: the supervisor launches it, a SIGKILL of the worker
is answered by a restart that resumes from the checkpoint, and the job ends SUCCEEDED with the
registered model version in its outputs."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar

from google.protobuf import json_format

from clients.aether.v1 import jobs_pb2 as pb
from clients.sdk.jobs import JobsClient
from clients.sdk.models import ModelRegistryClient
from tests.integration.training.conftest import FEATURES, Data, Plane
from tests.support.processes import find_process

T = TypeVar("T")


def worker_pid(job_id: str, attempt: int) -> int | None:
    """The trainer process of ``attempt`` of ``job_id``, found by its launch environment and command line
    (its parent, the executor's launcher, has the same environment)."""
    wanted = {f"AETHER_JOB_ID={job_id}".encode(), f"AETHER_JOB_ATTEMPT={attempt}".encode()}
    return find_process(wanted, lambda argv: argv[1:3] == [b"-m", b"control_plane.training.trainer"])


def wait_for(predicate: Callable[[], T | Literal[False] | None], timeout: float = 90.0) -> T:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)
    return value


def test_killed_trainer_job_is_restarted_and_resumes(plane: Plane, data: Data) -> None:
    spec = {
        "name": "ranker",
        "entrypoint": {"module": "control_plane.training.trainer"},
        "dataset": {"point_in_time": {"entity_rows_path": str(data.entity_rows_path), "features": ["stats"]}},
        "features": [f"stats@{data.version}:{f}" for f in FEATURES],
        "hyperparameters": {"label": "y", "epochs": 30, "batch_size": 32, "hidden": [8], "seed": 1},
        "max_retries": 1,
        "checkpoint_every_epochs": 1,
    }
    with JobsClient(plane.address) as jobs:
        job = jobs.submit(spec)
        checkpoints = Path(wait_for(lambda: jobs.get(job.job_id).checkpoint_dir))
        pid = wait_for(lambda: worker_pid(job.job_id, 1))
        # Any checkpoint from the second on: only the newest three are kept, so waiting for the second by
        # name could miss it (pruned between two polls) and see only the finished job.
        wait_for(
            lambda: (
                any(p.name >= "checkpoint-00000002.ckpt" for p in checkpoints.glob("checkpoint-*.ckpt"))
                or jobs.get(job.job_id).finished_at_us
            )
        )
        assert jobs.get(job.job_id).state == pb.JOB_STATE_RUNNING, b"".join(jobs.logs(job.job_id)).decode()
        os.kill(pid, signal.SIGKILL)
        done = wait_for(
            lambda: (j := jobs.get(job.job_id)).state in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED) and j
        )
        log = b"".join(jobs.logs(job.job_id)).decode()
    assert done.state == pb.JOB_STATE_SUCCEEDED, log
    assert done.attempt == 2
    assert "resumed from checkpoint-" in log
    assert "refused" not in log and "dropped" not in log  # every metric point reached the job's run
    assert {"model", "version"} <= set(done.outputs)
    with ModelRegistryClient(plane.address) as models:
        outputs = json_format.MessageToDict(done.outputs)
        version = models.get_version(str(outputs["model"]), int(outputs["version"]))
    assert version.run_id == done.run_id and len(version.dataset.hash) == 64
