"""A job token after its run has ended: every write it may otherwise make (``JOB_WRITES``: LogBatch,
LogArtifact, Artifacts/Upload, ModelRegistry/CreateModelVersion) is refused with FAILED_PRECONDITION naming
the job and the run, and nothing of the request is written; its reads still answer, and the admin still
writes. A write racing the run's end (the control plane's end transaction holding the run when the write
arrives) is refused too, since it is checked on the run's row as the write's own transaction reads it.

A real control plane with auth on (tracking, artifacts, model registry and audit services) on each
database backend; the job token is minted by the control plane's own :class:`JobTokens` under its admin
token, and the run is ended through the path the supervisor ends a job's run by
(``TrackingStore.end_run_once``, or its locked read and status change held open for the race)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc
import pytest
from sqlalchemy import Table
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import model_registry_pb2, model_registry_pb2_grpc, tracking_pb2, tracking_pb2_grpc
from clients.errors import AetherError, NotFound
from clients.sdk.audit import AuditClient, audit_filter
from clients.sdk.auth import ChannelSecurity
from clients.sdk.models import ModelRegistryClient
from control_plane.api import audit as audit_api
from control_plane.api import model_registry as model_registry_api
from control_plane.api import tracking as tracking_api
from control_plane.api.auth import AuthSettings
from control_plane.api.job_tokens import JobTokens
from control_plane.audit.tables import AuditEntryRow
from control_plane.db import create_db_engine, create_session_factory
from control_plane.db.engine import write_session
from control_plane.server import start_server
from control_plane.settings import ControlPlaneSettings
from control_plane.tracking.records import set_status
from control_plane.tracking.store import TrackingStore
from tests.support.threaded_plane import ThreadedControlPlane

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "admin-secret-ended-run-0123"
READONLY_TOKEN = "reader-secret-ended-run-4567"
JOB_ID = "job0ended"
#: What a refused upload would have stored.
LATE_BLOB = b"written after the end"


@dataclass
class Plane:
    address: str
    sessions: sessionmaker[Session]
    channel: grpc.Channel
    tracking: tracking_pb2_grpc.TrackingStub
    models: model_registry_pb2_grpc.ModelRegistryStub
    tmp_path: Path

    def run(self) -> str:
        """A new RUNNING run, as the supervisor creates a job's."""
        admin = [("authorization", f"Bearer {ADMIN_TOKEN}")]
        experiment = self.tracking.GetExperiment(
            tracking_pb2.GetExperimentRequest(name="jobs"), metadata=admin, timeout=20
        )
        run = self.tracking.CreateRun(
            tracking_pb2.CreateRunRequest(experiment_id=experiment.experiment_id), metadata=admin, timeout=20
        )
        return str(run.run_id)


@pytest.fixture
def plane(tmp_path: Path, db_url: str, redis_url: str) -> Iterator[Plane]:
    with _plane(tmp_path, db_url, redis_url) as started:
        yield started


@contextmanager
def _plane(tmp_path: Path, db_url: str, redis_url: str, audit_window_s: float = 60.0) -> Iterator[Plane]:
    settings = ControlPlaneSettings(
        home=tmp_path / "home",
        db_url=db_url,
        redis_url=redis_url,
        listen_addr="127.0.0.1:0",
        shutdown_grace_s=0.5,
        auth=AuthSettings(admin_token=ADMIN_TOKEN, readonly_token=READONLY_TOKEN),
        refusal_audit_window_s=audit_window_s,
    )
    services = [tracking_api.add_to_server, *model_registry_api.services(), audit_api.add_to_server]
    server = ThreadedControlPlane(start_server(settings, services=services))
    engine = create_db_engine(db_url)
    channel = grpc.insecure_channel(server.address)
    try:
        tracking = tracking_pb2_grpc.TrackingStub(channel)  # type: ignore[no-untyped-call]
        models = model_registry_pb2_grpc.ModelRegistryStub(channel)  # type: ignore[no-untyped-call]
        tracking.CreateExperiment(
            tracking_pb2.CreateExperimentRequest(name="jobs"),
            metadata=[("authorization", f"Bearer {ADMIN_TOKEN}")],
            timeout=20,
        )
        yield Plane(server.address, create_session_factory(engine), channel, tracking, models, tmp_path)
    finally:
        channel.close()
        server.stop()
        engine.dispose()


def _token(run_id: str) -> str:
    return JobTokens(ADMIN_TOKEN).mint(JOB_ID, run_id)


def _auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def _batch(run_id: str, step: int = 1) -> tracking_pb2.LogBatchRequest:
    series = tracking_pb2.MetricSeries(key="loss", values=[0.5], steps=[step], timestamps_us=[1])
    batch = tracking_pb2.RunBatch(run_id=run_id, metrics=[series], params={"lr": "0.1"}, tags={"note": "x"})
    return tracking_pb2.LogBatchRequest(runs=[batch])


def _code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    """The status ``call`` ends with and its message: a stub raises ``grpc.RpcError``, the SDK the
    :class:`AetherError` of the status."""
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    except AetherError as error:
        return error.code, error.message
    return grpc.StatusCode.OK, ""


@dataclass(frozen=True)
class Writes:
    """The four writes a job token may make, each as a call with ``token`` on ``run_id``."""

    plane: Plane
    run_id: str
    token: str
    sha256: str

    def log_batch(self) -> object:
        return self.plane.tracking.LogBatch(_batch(self.run_id, 2), metadata=_auth(self.token), timeout=60)

    def log_artifact(self) -> object:
        request = tracking_pb2.LogArtifactRequest(run_id=self.run_id, name="late.bin", sha256=self.sha256)
        return self.plane.tracking.LogArtifact(request, metadata=_auth(self.token), timeout=60)

    def create_model_version(self) -> object:
        request = model_registry_pb2.CreateModelVersionRequest(
            model_name="late-model", run_id=self.run_id, artifact_sha256=self.sha256, create_model=True
        )
        return self.plane.models.CreateModelVersion(request, metadata=_auth(self.token), timeout=60)

    def upload(self) -> object:
        with ModelRegistryClient(self.plane.address, security=ChannelSecurity(token=self.token)) as client:
            return client.artifacts.upload_bytes(LATE_BLOB)


def _artifact(plane: Plane) -> str:
    with ModelRegistryClient(plane.address, security=ChannelSecurity(token=ADMIN_TOKEN)) as admin:
        return admin.artifacts.upload_bytes(b"model weights " * 50).sha256


def _assert_nothing_written(plane: Plane, run_id: str, token: str) -> None:
    """The run holds only what the token wrote before the end, and no model was registered from it."""
    run = plane.tracking.GetRun(tracking_pb2.GetRunRequest(run_id=run_id), metadata=_auth(token), timeout=20)
    assert "note" not in run.tags and "lr" not in run.params
    assert not [metric for metric in run.metrics if metric.key == "loss"]
    assert [artifact.name for artifact in run.artifacts] == []
    listed = plane.models.ListRegisteredModels(
        model_registry_pb2.ListRegisteredModelsRequest(), metadata=_auth(ADMIN_TOKEN), timeout=20
    )
    assert [model.name for model in listed.models] == []
    admin = ModelRegistryClient(plane.address, security=ChannelSecurity(token=ADMIN_TOKEN))
    with admin, pytest.raises(NotFound):  # the upload refused stored no blob
        admin.artifacts.stat(hashlib.sha256(LATE_BLOB).hexdigest())


def test_an_ended_runs_job_token_writes_nothing(plane: Plane) -> None:
    run_id = plane.run()
    token = _token(run_id)
    sha256 = _artifact(plane)
    writes = Writes(plane, run_id, token, sha256)
    # While the run runs, the token writes.
    assert _code(
        lambda: plane.tracking.LogBatch(
            tracking_pb2.LogBatchRequest(runs=[tracking_pb2.RunBatch(run_id=run_id, tags={"early": "1"})]),
            metadata=_auth(token),
            timeout=20,
        )
    ) == (grpc.StatusCode.OK, "")

    # The control plane ends the run as the job ended (the supervisor's path).
    TrackingStore(plane.sessions).end_run_once(run_id, tracking_pb2.RUN_STATUS_KILLED, 0, actor="supervisor")

    for write in (writes.log_batch, writes.log_artifact, writes.create_model_version, writes.upload):
        code, details = _code(write)
        assert code == grpc.StatusCode.FAILED_PRECONDITION, (write.__name__, code, details)
        assert f"job:{JOB_ID}" in details and run_id in details and "ended KILLED" in details, details
    _assert_nothing_written(plane, run_id, token)
    # Reads with the token still answer, and the admin may still write to the ended run.
    run = plane.tracking.GetRun(tracking_pb2.GetRunRequest(run_id=run_id), metadata=_auth(token), timeout=20)
    assert run.status == tracking_pb2.RUN_STATUS_KILLED and run.tags["early"] == "1"
    assert _code(lambda: plane.tracking.LogBatch(_batch(run_id), metadata=_auth(ADMIN_TOKEN), timeout=20))[
        0
    ] == (grpc.StatusCode.OK)


@contextmanager
def _ending(sessions: sessionmaker[Session], run_id: str) -> Iterator[None]:
    """The control plane ending run ``run_id`` (KILLED), its transaction held open until the block ends:
    the run's row locked and its status changed, as ``TrackingStore.end_run_once`` does, not committed."""
    with write_session(sessions) as session:
        row, _ = TrackingStore._run_row(session, run_id, lock=True)
        assert set_status(session, row, "KILLED", 0, "supervisor", once=True)
        yield


@pytest.mark.parametrize("write", ["log_batch", "log_artifact", "create_model_version"])
def test_a_write_racing_the_runs_end_is_refused_whole(plane: Plane, write: str) -> None:
    run_id = plane.run()
    token = _token(run_id)
    writes = Writes(plane, run_id, token, _artifact(plane))
    with ThreadPoolExecutor(1) as pool:
        with _ending(plane.sessions, run_id):
            # Sent while the end holds the run: the write waits for the run's row (or the database's
            # write lock), then must see the end it waited for.
            racing = pool.submit(_code, getattr(writes, write))
            time.sleep(1.0)
            assert not racing.done()
        code, details = racing.result(timeout=60)
    assert code == grpc.StatusCode.FAILED_PRECONDITION, (code, details)
    assert "ended KILLED" in details
    _assert_nothing_written(plane, run_id, token)


def _job_refusals(plane: Plane, count: int) -> list[tuple[str, str, str, str]]:
    """The refused operations in the audit log, once there are ``count`` (a refusal's entry is written
    beside the answer, waited for a second at most: on a slow host it may follow it)."""
    with AuditClient(plane.address, security=ChannelSecurity(token=READONLY_TOKEN), timeout=20) as audit:
        deadline = time.monotonic() + 20
        while True:
            entries = list(audit.entries(audit_filter(refused=True)))
            if len(entries) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert audit.verify().ok
    return [(e.actor, e.action, f"{e.object_type}/{e.object_id}", e.outcome) for e in entries]


def test_a_job_tokens_refused_writes_are_audited(plane: Plane) -> None:
    run_id, other = plane.run(), plane.run()
    token = _token(run_id)
    writes = Writes(plane, run_id, token, _artifact(plane))
    strangers = Writes(plane, other, token, writes.sha256)
    denied = grpc.StatusCode.PERMISSION_DENIED
    # Outside the token's scope: another run, and a write it may never make.
    for write in (strangers.log_batch, strangers.log_artifact, strangers.create_model_version):
        assert _code(write)[0] == denied, write.__name__
    create = tracking_pb2.CreateExperimentRequest(name="mine")
    assert _code(lambda: plane.tracking.CreateExperiment(create, metadata=_auth(token)))[0] == denied
    # Reads are not audited, nor are writes that pass.
    read = tracking_pb2.GetRunRequest(run_id=other)
    assert _code(lambda: plane.tracking.GetRun(read, metadata=_auth(token)))[0] == grpc.StatusCode.OK
    # After its run's end: each write is refused, and audited.
    TrackingStore(plane.sessions).end_run_once(run_id, tracking_pb2.RUN_STATUS_KILLED, 0, actor="supervisor")
    for write in (writes.log_batch, writes.log_artifact, writes.upload, writes.create_model_version):
        assert _code(write)[0] == grpc.StatusCode.FAILED_PRECONDITION, write.__name__

    refusals = _job_refusals(plane, 8)
    actor, job = f"job:{JOB_ID}", f"job/{JOB_ID}"
    assert sorted((a, action, target) for a, action, target, _ in refusals) == sorted(
        [
            (actor, "/aether.v1.Tracking/LogBatch", job),
            (actor, "/aether.v1.Tracking/LogArtifact", job),
            (actor, "create_version", "registered_model/late-model"),  # filed under its model, as before
            (actor, "/aether.v1.Tracking/CreateExperiment", job),
            (actor, "/aether.v1.Tracking/LogBatch", job),
            (actor, "/aether.v1.Tracking/LogArtifact", job),
            (actor, "/aether.v1.Artifacts/Upload", job),
            (actor, "create_version", "registered_model/late-model"),
        ]
    )
    outcomes = [outcome for *_, outcome in refusals]
    stranger = [o for o in outcomes if "may write only its own run" in o]
    assert len(stranger) == 3 and all(repr(other) in o for o in stranger), stranger
    assert all(o.startswith(f"refused: PERMISSION_DENIED: the {actor} token") for o in stranger)
    assert (
        sum(o.startswith(f"refused: PERMISSION_DENIED: the {actor} token may not call") for o in outcomes)
        == 1
    )
    ended = [o for o in outcomes if o.startswith("refused: FAILED_PRECONDITION: ")]
    assert len(ended) == 4 and all(f"run {run_id} of {actor} has ended KILLED" in o for o in ended), ended


def test_a_job_tokens_refusal_stands_when_its_audit_entry_cannot_be_written(
    plane: Plane, db_url: str
) -> None:
    run_id, other = plane.run(), plane.run()
    token = _token(run_id)
    TrackingStore(plane.sessions).end_run_once(run_id, tracking_pb2.RUN_STATUS_FAILED, 0, actor="supervisor")
    engine = create_db_engine(db_url)
    try:
        cast(Table, AuditEntryRow.__table__).drop(engine)  # every audit write fails from here on
    finally:
        engine.dispose()
    stranger = _code(lambda: plane.tracking.LogBatch(_batch(other), metadata=_auth(token), timeout=20))
    assert stranger[0] == grpc.StatusCode.PERMISSION_DENIED, stranger
    ended = _code(lambda: plane.tracking.LogBatch(_batch(run_id), metadata=_auth(token), timeout=20))
    assert ended[0] == grpc.StatusCode.FAILED_PRECONDITION and "ended FAILED" in ended[1], ended


def test_a_job_tokens_refusals_are_rate_limited_and_every_one_is_counted(
    tmp_path: Path, db_url: str, redis_url: str
) -> None:
    # A job token is assumed to leak and is as long-lived as the admin token: one audit row per refusal
    # let it fill the audit log. Per window, five refusals of a method by one job are written one by one
    # and the rest counted into one summary entry (as refusals without a token are, per host).
    window_s = 3.0
    with _plane(tmp_path, db_url, redis_url, audit_window_s=window_s) as plane:
        run_id = plane.run()
        token = _token(run_id)
        TrackingStore(plane.sessions).end_run_once(
            run_id, tracking_pb2.RUN_STATUS_KILLED, 0, actor="supervisor"
        )
        started = time.monotonic()
        for step in range(8):
            refused = _code(
                lambda step=step: plane.tracking.LogBatch(_batch(run_id, step), metadata=_auth(token))
            )
            assert refused[0] == grpc.StatusCode.FAILED_PRECONDITION, refused
        assert time.monotonic() - started < window_s, "too slow to show one window"
        refusals = _job_refusals(plane, 6)  # the summary comes when the window ends
    assert len(refusals) == 6, refusals
    outcomes = sorted(outcome for *_, outcome in refusals)
    summary = [o for o in outcomes if "were folded into this entry" in o]
    assert summary == [
        f"refused: FAILED_PRECONDITION: run {run_id} of job:{JOB_ID} has ended KILLED: its job token may no"
        " longer write to it (LogBatch refused); nothing was written; 3 more refusals of"
        f" /aether.v1.Tracking/LogBatch from job:{JOB_ID} in {window_s:g} s were folded into this entry"
    ], outcomes
    assert {(actor, action) for actor, action, *_ in refusals} == {
        (f"job:{JOB_ID}", "/aether.v1.Tracking/LogBatch")
    }
