"""SIGKILL a training worker mid-training; the restarted attempt resumes from the last checkpoint and
ends with weights equal, bit for bit, to an uninterrupted run with the same seed (CPU)."""

from __future__ import annotations

import datetime as dt
import json
import re
import signal
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from clients.sdk.models import ModelRegistryClient
from clients.sdk.registry import FeatureRegistryClient
from clients.sdk.tracking import TrackingClient
from control_plane.offline.store import OfflineStore
from control_plane.training.checkpoint import CheckpointManager, load_payload
from tests.integration.training.conftest import (
    FEATURES,
    T0,
    TS,
    Data,
    Job,
    Plane,
    make_job,
    materialize,
    start_plane,
)

EPOCHS = 20
HYPERPARAMETERS = {
    "task": "regression",
    "label": "y",
    "epochs": EPOCHS,
    "batch_size": 64,
    "hidden": [16, 8],
    "dropout": 0.1,  # draws from torch's global RNG: restored from the checkpoint or the runs diverge
    "lr": 0.003,
    "lr_step_epochs": 5,
    "lr_gamma": 0.7,  # the scheduler's state matters too
    "seed": 42,
    "keep_last_checkpoints": 2,
}


def newest_epoch(job: Job) -> int:
    checkpoint = CheckpointManager(job.checkpoint_dir).resume()
    return -1 if checkpoint is None else checkpoint.epoch


def wait_for_checkpoint(job: Job, sequence: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    wanted = f"checkpoint-{sequence:08d}.ckpt"
    while not (job.checkpoint_dir / wanted).exists():
        assert time.monotonic() < deadline, f"no {wanted} after {timeout}s:\n{job.log()}"
        time.sleep(0.002)


def final_weights(job: Job) -> dict[str, torch.Tensor]:
    [*_, last] = CheckpointManager(job.checkpoint_dir).checkpoints()
    payload = load_payload(last)
    assert payload["epoch"] == EPOCHS
    weights: dict[str, torch.Tensor] = payload["model"]
    return weights


def kill_after_checkpoint(job: Job, plane: Plane, attempt: int, sequence: int) -> int:
    """Starts ``attempt``, SIGKILLs it as soon as checkpoint ``sequence`` exists; the newest epoch saved."""
    process = job.start(plane, attempt)
    try:
        wait_for_checkpoint(job, sequence)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        process.kill()
    killed_at = newest_epoch(job)
    assert sequence <= killed_at < EPOCHS, "the worker must die mid-training"
    assert not job.outputs_path.exists()
    return killed_at


def flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    path.write_bytes(bytes(data))


def test_sigkill_then_resume_gives_bitwise_equal_weights(plane: Plane, data: Data, tmp_path: Path) -> None:
    reference = make_job(plane, data, tmp_path, "uninterrupted", HYPERPARAMETERS)
    crashing = make_job(plane, data, tmp_path, "crashing", HYPERPARAMETERS)
    uninterrupted = reference.start(plane, attempt=1)

    # Attempt 1 dies after its third checkpoint; attempt 2 resumes from it and dies three epochs later.
    first_kill = kill_after_checkpoint(crashing, plane, 1, 3)
    second_kill = kill_after_checkpoint(crashing, plane, 2, first_kill + 3)
    log = crashing.log()
    assert f"resumed from checkpoint-{first_kill:08d}.ckpt: epoch {first_kill}" in log
    # The newest checkpoint is damaged on disk: attempt 3 falls back to the one before, with a warning.
    newest = crashing.checkpoint_dir / f"checkpoint-{second_kill:08d}.ckpt"
    flip_bytes(newest)
    assert crashing.run(plane, attempt=3) == 0, crashing.log()
    assert uninterrupted.wait(timeout=120) == 0, reference.log()
    log = crashing.log()
    assert (
        f"CorruptCheckpointWarning: skipping corrupt checkpoint {newest.name}: sha256 checksum mismatch"
        in log
    )
    assert f"resumed from checkpoint-{second_kill - 1:08d}.ckpt: epoch {second_kill - 1}" in log
    assert newest.with_name(newest.name + ".corrupt").exists()

    expected, resumed = final_weights(reference), final_weights(crashing)
    assert expected.keys() == resumed.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, resumed[name]), f"{name} differs after the resume"
    assert len(CheckpointManager(crashing.checkpoint_dir).checkpoints()) == 2  # keep-last-K in the job

    outputs = [json.loads(job.outputs_path.read_text()) for job in (reference, crashing)]
    assert outputs[0]["metrics"] == outputs[1]["metrics"]  # same weights, same held-out metrics
    assert outputs[0]["dataset_hash"] == outputs[1]["dataset_hash"]
    with ModelRegistryClient(plane.address) as models:
        version = models.get_version(outputs[1]["model"], outputs[1]["version"])
    assert version.run_id == crashing.run_id and dict(version.metrics) == outputs[1]["metrics"]
    with TrackingClient(plane.address) as tracking:
        replayed = tracking.metric_history(crashing.run_id, "train_loss")
        straight = tracking.metric_history(reference.run_id, "train_loss")
    # One curve across the three attempts: points lost with a killed process were sent again from the
    # checkpoint, replayed epochs were not sent twice, and the values are the straight run's.
    assert sorted(replayed.steps) == list(range(EPOCHS)) == sorted(straight.steps)
    assert dict(zip(replayed.steps, replayed.values, strict=True)) == dict(
        zip(straight.steps, straight.values, strict=True)
    )


def stats_rows(users: int, value: float, ingested_later: dt.timedelta = dt.timedelta(0)) -> pa.Table:
    """Rows of view ``stats`` (every feature ``value``) for users 0..users-1 at the conftest's event
    times, ingested ``ingested_later`` after them (a later ingestion wins the point-in-time join)."""
    ids = np.arange(users, dtype=np.int64)
    times = [T0 + dt.timedelta(seconds=int(i)) for i in ids]
    columns = {
        "user_id": pa.array(ids),
        "event_ts": pa.array(times, TS),
        "ingested_ts": pa.array([t + ingested_later for t in times], TS),
    }
    return pa.table({**columns, **{name: pa.array(np.full(users, value)) for name in FEATURES}})


def test_a_retry_trains_on_the_feature_versions_its_first_attempt_pinned(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """The spec asks for view ``stats`` unversioned. Each attempt pinned it anew: a retry after a new
    version was published resumed a checkpoint trained on stats@1 with stats@2's data and registered
    stats@2 and its dataset hash as the model's lineage. And when rows were added to the pinned version
    itself, a retry resumed the checkpoint on the changed data without a word."""
    plane_gen = start_plane(
        tmp_path_factory
    )  # its own: it publishes versions the module's tests must not see
    plane = next(plane_gen)
    try:
        data = materialize(plane, plane.home / "datasets", users=600)
        hyperparameters = {**HYPERPARAMETERS, "epochs": 30, "batch_size": 16, "dropout": 0}
        job = make_job(plane, data, tmp_path, "pinned", hyperparameters)
        kill_after_checkpoint(job, plane, 1, 2)
        [first_hash] = re.findall(r"^dataset ([0-9a-f]{64}):", job.log(), re.MULTILINE)
        with FeatureRegistryClient(plane.address) as registry:
            spec = registry.get_feature_view("stats", data.version).spec
            spec.source.uri = "offline-v2"  # a versioned change: same features, another source
            published = registry.create_feature_view_version(spec)
        offline = OfflineStore(str(plane.home / "offline"))
        offline.write("stats", int(published.version), stats_rows(600, 100.0))

        assert job.run(plane, attempt=2) == 0, job.log()
        outputs = json.loads(job.outputs_path.read_text())
        assert outputs["dataset_hash"] == first_hash
        with ModelRegistryClient(plane.address) as models:
            version = models.get_version(outputs["model"], outputs["version"])
        assert list(version.feature_refs) == [f"stats@{data.version}:{name}" for name in FEATURES]

        # Rows added to the pinned version (now the latest, 2) between two attempts: the resume is
        # refused, not trained on a mix of both.
        changed = make_job(plane, data, tmp_path, "changed", hyperparameters)
        kill_after_checkpoint(changed, plane, 1, 2)
        corrections = stats_rows(600, 7.0, ingested_later=dt.timedelta(minutes=1)).slice(0, 300)
        offline.write("stats", int(published.version), corrections)
        assert changed.run(plane, attempt=2) != 0
        log = changed.log()
        assert "FailedPrecondition: checkpoint checkpoint-" in log, log
        assert "the data changed since the job started" in log
        assert not changed.outputs_path.exists()
    finally:
        next(plane_gen, None)
