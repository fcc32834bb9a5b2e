"""A job's own token: what the supervisor hands a job instead of the admin token, and what it may do.

A real ``python -m control_plane`` runs with auth on and an admin token given to jobs through
``AETHER_TOKEN_FILE`` (what the operator had to do before: no narrower writing role existed). A real job
prints its environment; the test then calls the control plane with the token the job was given."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from clients.aether.v1 import (
    feature_registry_pb2,
    feature_registry_pb2_grpc,
    jobs_pb2_grpc,
    model_registry_pb2,
    model_registry_pb2_grpc,
    tracking_pb2,
    tracking_pb2_grpc,
)
from clients.aether.v1 import jobs_pb2 as pb
from clients.sdk.jobs import JobsClient
from tests.integration.security.job_planes import PRINT_ENV, control_plane, jobs_client, printed_env

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "admin-secret-job-token-0123"
READONLY_TOKEN = "reader-secret-job-token-4567"


@dataclass(frozen=True)
class Plane:
    address: str
    home: Path


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    tmp_path = tmp_path_factory.mktemp("job-tokens")
    admin_file = tmp_path / "admin-token"
    admin_file.write_text(ADMIN_TOKEN)
    admin_file.chmod(0o600)
    env = {
        **os.environ,
        "AETHER_HOME": str(tmp_path / "home"),
        "AETHER_DB_URL": f"sqlite:///{tmp_path / 'aether.db'}",
        "AETHER_REDIS_URL": "redis://127.0.0.1:1/0",
        "AETHER_ADMIN_TOKEN": ADMIN_TOKEN,
        "AETHER_READONLY_TOKEN": READONLY_TOKEN,
        # What operators did before job tokens: hand jobs the admin token.
        "AETHER_TOKEN_FILE": str(admin_file),
    }
    env.pop("AETHER_TOKEN", None)
    with control_plane(env) as address:
        yield Plane(address, tmp_path / "home")


def _code(call: object, request: object, token: str) -> grpc.StatusCode:
    try:
        call(request, metadata=[("authorization", f"Bearer {token}")], timeout=20)  # type: ignore[operator]
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def _batch(run_id: str) -> tracking_pb2.LogBatchRequest:
    series = tracking_pb2.MetricSeries(key="loss", values=[0.5], steps=[1], timestamps_us=[1])
    return tracking_pb2.LogBatchRequest(runs=[tracking_pb2.RunBatch(run_id=run_id, metrics=[series])])


# Prints its environment, then runs until the file its argument names appears: its token writes its run
# only while the job (so its run) has not ended.
PRINT_ENV_AND_WAIT = (
    PRINT_ENV
    + """
import pathlib, sys, time
deadline = time.monotonic() + 120
while not pathlib.Path(sys.argv[1]).exists() and time.monotonic() < deadline:
    time.sleep(0.05)
"""
)


def _started(admin: JobsClient, job_id: str) -> tuple[pb.Job, dict[str, str]]:
    """The job once it runs and has printed its environment, and that environment."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = admin.get(job_id)
        assert job.state not in (pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED), job.reason
        log = b"".join(admin.logs(job_id)).decode()
        if job.run_id and "ENV=" in log:
            return job, printed_env(log)
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not start")


def test_a_job_gets_a_token_of_its_own_that_writes_only_its_run(plane: Plane) -> None:
    release = plane.home.parent / "release-tokenprobe"
    command = [sys.executable, "-c", PRINT_ENV_AND_WAIT, str(release)]
    spec = {"name": "tokenprobe", "entrypoint": {"command": command}}
    with jobs_client(plane.address, ADMIN_TOKEN) as admin:
        job, printed = _started(admin, admin.submit(spec).job_id)
        try:
            _check_token(plane, job, printed)
        finally:
            release.touch()
        assert admin.wait(job.job_id, timeout=60).state == pb.JOB_STATE_SUCCEEDED


def _check_token(plane: Plane, job: pb.Job, printed: dict[str, str]) -> None:
    # Not the admin token the operator's environment named: a token file in the job's private folder.
    token_file = Path(printed["AETHER_TOKEN_FILE"])
    assert "AETHER_TOKEN" not in printed
    assert token_file.parent.name == job.job_id and token_file.is_relative_to(plane.home)
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text()
    assert token not in (ADMIN_TOKEN, READONLY_TOKEN)
    assert ADMIN_TOKEN not in json.dumps(printed)

    with grpc.insecure_channel(plane.address) as channel:
        tracking = tracking_pb2_grpc.TrackingStub(channel)  # type: ignore[no-untyped-call]
        # Its own run: metrics are written.
        assert _code(tracking.LogBatch, _batch(job.run_id), token) == grpc.StatusCode.OK
        history = tracking.GetMetricHistory(
            tracking_pb2.GetMetricHistoryRequest(run_id=job.run_id, key="loss"),
            metadata=[("authorization", f"Bearer {token}")],
        )
        assert list(history.values) == [0.5]
        # Another run, even beside its own in one batch: refused, nothing written.
        experiment = tracking.CreateExperiment(
            tracking_pb2.CreateExperimentRequest(name="other"),
            metadata=[("authorization", f"Bearer {ADMIN_TOKEN}")],
        )
        other = tracking.CreateRun(
            tracking_pb2.CreateRunRequest(experiment_id=experiment.experiment_id),
            metadata=[("authorization", f"Bearer {ADMIN_TOKEN}")],
        )
        assert _code(tracking.LogBatch, _batch(other.run_id), token) == grpc.StatusCode.PERMISSION_DENIED
        both = _batch(job.run_id)
        both.runs.extend(_batch(other.run_id).runs)
        assert _code(tracking.LogBatch, both, token) == grpc.StatusCode.PERMISSION_DENIED
        log_artifact = tracking_pb2.LogArtifactRequest(run_id=other.run_id, name="x", sha256="0" * 64)
        assert _code(tracking.LogArtifact, log_artifact, token) == grpc.StatusCode.PERMISSION_DENIED
        # Admin-only operations are refused to it.
        denied = grpc.StatusCode.PERMISSION_DENIED
        assert (
            _code(tracking.CreateExperiment, tracking_pb2.CreateExperimentRequest(name="mine"), token)
            == denied
        )
        assert _code(tracking.UpdateRun, tracking_pb2.UpdateRunRequest(run_id=job.run_id), token) == denied
        jobs = jobs_pb2_grpc.JobsStub(channel)  # type: ignore[no-untyped-call]
        assert _code(jobs.Submit, pb.SubmitJobRequest(spec=job.spec), token) == denied
        assert _code(jobs.Cancel, pb.CancelJobRequest(job_id=job.job_id), token) == denied
        registry = feature_registry_pb2_grpc.FeatureRegistryStub(channel)  # type: ignore[no-untyped-call]
        entity = feature_registry_pb2.CreateEntityRequest(entity=feature_registry_pb2.Entity(name="zone"))
        assert _code(registry.CreateEntity, entity, token) == denied
        models = model_registry_pb2_grpc.ModelRegistryStub(channel)  # type: ignore[no-untyped-call]
        other_version = model_registry_pb2.CreateModelVersionRequest(model_name="m", run_id=other.run_id)
        assert _code(models.CreateModelVersion, other_version, token) == denied
        # Registering its own run's model version passes the token check (the version itself is refused
        # here for want of an artifact, which is the registry's business, not the token's).
        own_version = model_registry_pb2.CreateModelVersionRequest(model_name="m", run_id=job.run_id)
        assert _code(models.CreateModelVersion, own_version, token) not in (denied, grpc.StatusCode.OK)
        delete = model_registry_pb2.DeleteRegisteredModelRequest(name="m")
        assert _code(models.DeleteRegisteredModel, delete, token) == denied
        # It reads as any token does.
        assert (
            _code(tracking.GetRun, tracking_pb2.GetRunRequest(run_id=job.run_id), token) == grpc.StatusCode.OK
        )
        # A forged or altered token is no token at all.
        forged = token.rsplit(".", 1)[0].replace(job.run_id, other.run_id) + "." + token.rsplit(".", 1)[1]
        assert _code(tracking.LogBatch, _batch(other.run_id), forged) == grpc.StatusCode.UNAUTHENTICATED


def test_a_spec_that_names_its_token_keeps_it(plane: Plane) -> None:
    spec = {
        "name": "owntoken",
        "entrypoint": {"command": [sys.executable, "-c", PRINT_ENV]},
        "env": {"AETHER_TOKEN": READONLY_TOKEN},
    }
    with jobs_client(plane.address, ADMIN_TOKEN) as admin:
        job = admin.wait(admin.submit(spec).job_id, timeout=60)
        printed = printed_env(b"".join(admin.logs(job.job_id)).decode())
    assert printed["AETHER_TOKEN"] == READONLY_TOKEN
    assert "AETHER_TOKEN_FILE" not in printed


def test_only_a_caller_that_may_write_reads_what_a_job_printed(plane: Plane) -> None:
    printing = "print('secret the job chose to print: s3cr3t-in-log', flush=True)"
    spec = {"name": "printer", "entrypoint": {"command": [sys.executable, "-c", printing]}}
    with (
        jobs_client(plane.address, ADMIN_TOKEN) as admin,
        jobs_client(plane.address, READONLY_TOKEN) as reader,
    ):
        job = admin.wait(admin.submit(spec).job_id, timeout=60)
        assert b"s3cr3t-in-log" in b"".join(admin.logs(job.job_id))
        assert reader.get(job.job_id).state == pb.JOB_STATE_SUCCEEDED  # the job itself is still readable
    with grpc.insecure_channel(plane.address) as channel:
        jobs = jobs_pb2_grpc.JobsStub(channel)  # type: ignore[no-untyped-call]
        for caller in (READONLY_TOKEN, next(plane.home.rglob(f"{job.job_id}/token")).read_text()):
            with pytest.raises(grpc.RpcError) as refused:
                list(
                    jobs.Logs(
                        pb.JobLogsRequest(job_id=job.job_id), metadata=[("authorization", f"Bearer {caller}")]
                    )
                )
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "s3cr3t" not in (refused.value.details() or "")


def test_an_ended_jobs_token_can_neither_rewrite_how_its_run_ended_nor_add_to_it(plane: Plane) -> None:
    spec = {"name": "fails", "entrypoint": {"command": [sys.executable, "-c", "raise SystemExit(3)"]}}
    with jobs_client(plane.address, ADMIN_TOKEN) as admin:
        job = admin.wait(admin.submit(spec).job_id, timeout=60)
    assert job.state == pb.JOB_STATE_FAILED
    token = next(plane.home.rglob(f"{job.job_id}/token")).read_text()
    metadata = [("authorization", f"Bearer {token}")]
    with grpc.insecure_channel(plane.address) as channel:
        tracking = tracking_pb2_grpc.TrackingStub(channel)  # type: ignore[no-untyped-call]
        ending = _batch(job.run_id)
        ending.runs[0].end.status = tracking_pb2.RUN_STATUS_FINISHED
        ending.runs[0].tags["note"] = "all good"
        with pytest.raises(grpc.RpcError) as refused:
            tracking.LogBatch(ending, metadata=metadata, timeout=20)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert job.run_id in (refused.value.details() or "") and "FAILED" in (refused.value.details() or "")
        run = tracking.GetRun(tracking_pb2.GetRunRequest(run_id=job.run_id), metadata=metadata, timeout=20)
        assert run.status == tracking_pb2.RUN_STATUS_FAILED
        assert "note" not in run.tags  # nothing of the refused request was written
        # Nor may it add to its run: the run ended with the job (see test_ended_run_job_tokens.py for
        # every write a job token may make, and for writes racing the end).
        refused_code = _code(tracking.LogBatch, _batch(job.run_id), token)
        assert refused_code == grpc.StatusCode.FAILED_PRECONDITION
        history = tracking.GetMetricHistory(
            tracking_pb2.GetMetricHistoryRequest(run_id=job.run_id, key="loss"), metadata=metadata, timeout=20
        )
        assert list(history.values) == []
        # It still reads.
        assert (
            _code(tracking.GetRun, tracking_pb2.GetRunRequest(run_id=job.run_id), token) == grpc.StatusCode.OK
        )
        # The admin may still correct a run's end.
        assert _code(tracking.LogBatch, ending, ADMIN_TOKEN) == grpc.StatusCode.OK


# Walks up the job's parents (the launcher, the control plane, ...) reading what /proc shows of each
# one's environment, as a hostile job did to take the admin token.
READ_PARENTS = r"""
import os, sys
pid, seen = os.getppid(), []
while pid > 1:
    try:
        with open(f"/proc/{pid}/environ", "rb") as file:
            shown = file.read()
        found = [token for token in sys.argv[1:] if token.encode() in shown]
        seen.append(f"{pid}:{','.join(found) or 'clean'}")
    except OSError as error:
        seen.append(f"{pid}:refused:{error.errno}")
    with open(f"/proc/{pid}/stat") as stat:
        pid = int(stat.read().rsplit(")", 1)[1].split()[1])
print("PARENTS=" + " ".join(seen), flush=True)
"""


def test_a_job_finds_no_token_in_its_parents_environment(plane: Plane) -> None:
    command = [sys.executable, "-c", READ_PARENTS, ADMIN_TOKEN, READONLY_TOKEN]
    with jobs_client(plane.address, ADMIN_TOKEN) as admin:
        job = admin.wait(
            admin.submit({"name": "thief", "entrypoint": {"command": command}}).job_id, timeout=60
        )
        log = b"".join(admin.logs(job.job_id)).decode()
    assert job.state == pb.JOB_STATE_SUCCEEDED, log
    seen = next(line for line in log.splitlines() if line.startswith("PARENTS=")).split("=", 1)[1].split()
    assert len(seen) >= 2, seen  # the launcher and the control plane at least
    assert all(entry.endswith((":clean", ":refused:13")) for entry in seen), seen
