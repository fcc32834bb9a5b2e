"""The built-in trainer as a job with auth on: it calls back with its own job token (before, only the admin
token, handed to jobs through the environment, could write), logs its metrics, registers its model version
and records its training set's lineage, all with that token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import json_format

from clients.aether.v1 import jobs_pb2 as pb
from clients.sdk.auth import ChannelSecurity
from clients.sdk.jobs import JobsClient
from clients.sdk.models import ModelRegistryClient
from clients.sdk.tracking import TrackingClient
from control_plane.api.auth import AuthSettings
from control_plane.settings import ControlPlaneSettings
from tests.integration.training.conftest import (
    FEATURES,
    Plane,
    ThreadedControlPlane,
    materialize,
)
from tests.support.ports import HeldPort

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "admin-secret-trainer-0123456"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    home = tmp_path_factory.mktemp("plane")
    with HeldPort() as port:  # until the plane has bound it (conftest.start_plane)
        settings = ControlPlaneSettings(
            home=home,
            db_url=f"sqlite:///{home / 'aether.db'}",
            listen_addr=port.address,
            shutdown_grace_s=0.5,
            auth=AuthSettings(admin_token=ADMIN_TOKEN),
        )
        server = ThreadedControlPlane(settings)
        yield Plane(server.address, home)
        server.stop()


def test_the_trainer_job_does_its_writes_with_its_own_token(plane: Plane) -> None:
    admin = ChannelSecurity(token=ADMIN_TOKEN)
    data = materialize(plane, plane.home / "datasets", users=300, security=admin)
    spec = {
        "name": "ranker",
        "entrypoint": {"module": "control_plane.training.trainer"},
        "dataset": {"point_in_time": {"entity_rows_path": str(data.entity_rows_path), "features": ["stats"]}},
        "features": [f"stats@{data.version}:{f}" for f in FEATURES],
        "hyperparameters": {"label": "y", "epochs": 2, "batch_size": 64, "hidden": [4], "seed": 1},
    }
    with JobsClient(plane.address, security=admin) as jobs:
        done = jobs.wait(jobs.submit(spec).job_id, timeout=240)
        log = b"".join(jobs.logs(done.job_id)).decode()
    assert done.state == pb.JOB_STATE_SUCCEEDED, log
    assert (Path(done.log_path).parent / "token").read_text().startswith("aether-job.")
    outputs = json_format.MessageToDict(done.outputs)
    with ModelRegistryClient(plane.address, security=admin) as models:
        version = models.get_version(str(outputs["model"]), int(outputs["version"]))
    assert version.run_id == done.run_id and version.created_by == f"job:{done.job_id}"
    assert (plane.home / "offline" / "_datasets" / f"{version.dataset.hash}.json").exists()
    with TrackingClient(plane.address, security=admin) as tracking:
        assert tracking.metric_history(done.run_id, "train_loss").values
