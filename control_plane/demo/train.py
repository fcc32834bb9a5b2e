"""Stage 4: the built-in trainer (``python -m control_plane.training.trainer``) submitted as a job through
the Jobs service. The supervisor launches it; it builds the training set from the query (checking the
dataset hash), logs its metrics to a tracked run, exports ONNX, and registers the version with lineage
(run, dataset hash and query, pinned feature refs) and a drift reference profile."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from clients.aether.v1 import jobs_pb2 as jpb
from clients.aether.v1 import model_registry_pb2 as mpb
from clients.sdk.jobs import JobsClient, state_name
from clients.sdk.models import ModelRegistryClient
from control_plane.demo import world
from control_plane.demo.progress import Say
from control_plane.demo.training_set import TrainingSet, pinned

MODEL = "zone-demand"
JOB = "zone-demand-train"


@dataclass(frozen=True)
class Trained:
    job_id: str
    run_id: str
    version: mpb.ModelVersion
    seconds: float


def job_spec(training: TrainingSet, views: dict[str, int], epochs: int) -> dict[str, Any]:
    return {
        "name": JOB,
        "entrypoint": {"module": "control_plane.training.trainer"},
        "dataset": {
            "point_in_time": {
                "entity_rows_path": str(training.entity_rows_path),
                "features": pinned(views),
            },
        },
        "features": pinned(views),
        "hyperparameters": {
            "label": world.LABEL,
            "model_name": MODEL,
            "epochs": epochs,
            "batch_size": 64,
            "hidden": "32,16",
            "lr": 0.01,
            "seed": 1,
        },
        "max_retries": 0,
    }


def wait_for_job(jobs: JobsClient, job_id: str, say: Say, timeout_s: float) -> jpb.Job:
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        job = jobs.get(job_id)
        state = state_name(job.state)
        if state != last:
            say(f"      job {job_id[:8]} {state}")
            last = state
        if job.finished_at_us:
            return job
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} still {state} after {timeout_s:g}s")
        time.sleep(0.5)


def job_output_version(models: ModelRegistryClient, job: jpb.Job) -> mpb.ModelVersion:
    outputs = json_format.MessageToDict(job.outputs)
    return models.get_version(str(outputs["model"]), int(outputs["version"]))


def train_model(
    address: str, training: TrainingSet, views: dict[str, int], epochs: int, say: Say, timeout_s: float = 300
) -> Trained:
    started = time.monotonic()
    with JobsClient(address) as jobs:
        job = jobs.submit(job_spec(training, views, epochs))
        done = wait_for_job(jobs, job.job_id, say, timeout_s)
        if done.state != jpb.JOB_STATE_SUCCEEDED:
            log = b"".join(jobs.logs(job.job_id)).decode(errors="replace")
            raise RuntimeError(f"training job {job.job_id} ended {state_name(done.state)}:\n{log[-3000:]}")
    with ModelRegistryClient(address) as models:
        version = job_output_version(models, done)
    seconds = time.monotonic() - started
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in sorted(version.metrics.items()))
    say(
        f"[4/8] trained {MODEL} v{version.version} as job {done.job_id[:8]} in {seconds:.0f}s "
        f"(run {done.run_id[:8]}; {metrics})"
    )
    return Trained(done.job_id, done.run_id, version, seconds)
