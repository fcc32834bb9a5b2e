"""A real control plane (every default service, SQLite) with a feature view materialized into its offline
store, and a launcher that starts the built-in trainer as a real subprocess with the executor's launch
environment (:mod:`control_plane.jobs.launch_env`) — what the local executor does.

The plane and the data are module-scoped: the trainer subprocesses dominate the time, and each test uses
its own model name and job folder."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clients.aether.v1 import feature_registry_pb2 as fpb
from clients.aether.v1 import jobs_pb2 as pb
from clients.aether.v1 import types_pb2
from clients.sdk.auth import ChannelSecurity
from clients.sdk.registry import FeatureRegistryClient
from clients.sdk.tracking import TrackingClient
from control_plane.api import jobs as jobs_api
from control_plane.api import model_registry as model_registry_api
from control_plane.api import offline_features as offline_api
from control_plane.api import tracking as tracking_api
from control_plane.jobs.executor import job_argv
from control_plane.jobs.launch_env import LaunchEnv
from control_plane.jobs.pool import DevicePool
from control_plane.jobs.settings import JobsSettings
from control_plane.jobs.spec import spec_from_mapping, spec_to_json
from control_plane.offline.store import OfflineStore
from control_plane.server import ControlPlaneServer, start_server
from control_plane.settings import ControlPlaneSettings
from tests.support.ports import HeldPort

REPO = Path(__file__).resolve().parents[3]
T0 = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
TS = pa.timestamp("us", tz="UTC")
FEATURES = ("x1", "x2", "x3", "x4")
TRAINER = ("-m", "control_plane.training.trainer")


class ThreadedControlPlane:
    """The control plane on its own event loop in a background thread, so that the synchronous SDK and
    subprocesses can call it while the test blocks."""

    def __init__(self, settings: ControlPlaneSettings, pool: DevicePool | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="control-plane", daemon=True)
        self._thread.start()
        jobs = JobsSettings(folder=settings.home / "jobs", tick_s=0.1, kill_grace_s=1.0, job_cwd=REPO)
        if pool is not None:
            jobs = replace(jobs, pool=pool)
        # The services a training job talks to, named one by one (not DEFAULT_SERVICES, which may or may
        # not include the jobs service by the time this runs: a service registered twice fails).
        services = [
            tracking_api.add_to_server,
            model_registry_api.add_artifacts_to_server,
            model_registry_api.add_to_server,
            offline_api.add_to_server,
            jobs_api.service_module(jobs),
        ]
        future = asyncio.run_coroutine_threadsafe(start_server(settings, services=services), self._loop)
        self._server: ControlPlaneServer = future.result(timeout=60)
        self.address = self._server.address

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


@dataclass(frozen=True)
class Plane:
    address: str
    home: Path


@dataclass(frozen=True)
class Data:
    """View ``stats`` v1 (x1..x4, float64) for users 0..n-1; entity rows with a numeric label ``y`` and
    a string label ``churned``."""

    entity_rows_path: Path
    view: str
    version: int
    rows: int


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    yield from start_plane(tmp_path_factory)


def start_plane(tmp_path_factory: pytest.TempPathFactory, pool: DevicePool | None = None) -> Iterator[Plane]:
    """A control plane in its own home, with the jobs service scheduling on ``pool`` (default: none)."""
    home = tmp_path_factory.mktemp("plane")
    # A fixed port, not 0: the jobs service tells the jobs it launches the address it was configured
    # with, and a port-0 address would not reach it. Held until the plane has bound it beside the hold
    # (and on until it stops): a port picked free and let go was another test worker's to take meanwhile.
    with HeldPort() as port:
        settings = ControlPlaneSettings(
            home=home,
            db_url=f"sqlite:///{home / 'aether.db'}",
            listen_addr=port.address,
            shutdown_grace_s=0.5,
        )
        server = ThreadedControlPlane(settings, pool)
        yield Plane(server.address, home)
        server.stop()


@pytest.fixture(scope="module")
def data(plane: Plane) -> Data:
    # Under the plane's datasets root: the server reads entity rows from nowhere else.
    return materialize(plane, plane.home / "datasets", users=2000)


def materialize(plane: Plane, folder: Path, users: int, security: ChannelSecurity | None = None) -> Data:
    """Registers entity ``user`` and view ``stats``, writes its rows into the plane's offline store and
    the labelled entity rows (one hour after the features, so the point-in-time join finds them)."""
    with FeatureRegistryClient(plane.address, timeout=20, security=security) as registry:
        registry.create_entity(
            fpb.Entity(name="user", join_keys=[fpb.JoinKey(name="user_id", value_type=types_pb2.INT64)])
        )
        view = registry.create_feature_view(
            fpb.FeatureViewSpec(
                name="stats",
                entity="user",
                features=[fpb.Feature(name=name, value_type=types_pb2.FLOAT64) for name in FEATURES],
                source=fpb.Source(kind="batch", uri="offline", timestamp_field="event_ts"),
                ttl_seconds=0,
            ),
            fpb.FeatureViewMetadata(owner="ml"),
        )
    rng = np.random.default_rng(11)
    x = rng.normal(size=(users, len(FEATURES)))
    x[rng.random(users) < 0.05, 3] = np.nan  # some missing values: the model imputes them
    ids = np.arange(users, dtype=np.int64)
    feature_time = [T0 + dt.timedelta(seconds=int(i)) for i in ids]
    columns: dict[str, pa.Array] = {
        "user_id": pa.array(ids),
        "event_ts": pa.array(feature_time, TS),
        "ingested_ts": pa.array(feature_time, TS),
    }
    for index, name in enumerate(FEATURES):
        columns[name] = pa.array(x[:, index], from_pandas=True)
    OfflineStore(str(plane.home / "offline")).write("stats", int(view.version), pa.table(columns))
    filled = np.nan_to_num(x)
    y = 2 * filled[:, 0] - filled[:, 1] + 0.5 * filled[:, 2] * filled[:, 3] + rng.normal(0, 0.1, users)
    churned = np.where(filled[:, 0] + filled[:, 1] > 0, "yes", "no")
    entity_rows = pa.table(
        {
            "user_id": pa.array(ids),
            "event_ts": pa.array([t + dt.timedelta(hours=1) for t in feature_time], TS),
            "y": pa.array(y),
            "churned": pa.array(churned.tolist()),
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "entity_rows.parquet"
    pq.write_table(entity_rows, path)
    return Data(path, "stats", int(view.version), users)


@dataclass(frozen=True)
class Job:
    """One job's folder (spec file, checkpoints, outputs) and tracking run, as the control plane would
    have prepared them."""

    job_id: str
    folder: Path
    spec_path: Path
    run_id: str
    experiment: str

    @property
    def checkpoint_dir(self) -> Path:
        return self.folder / "checkpoints"

    @property
    def outputs_path(self) -> Path:
        return self.folder / "outputs.json"

    @property
    def log_path(self) -> Path:
        return self.folder / "job.log"

    def env(self, plane: Plane, attempt: int) -> dict[str, str]:
        launch = LaunchEnv(
            job_id=self.job_id,
            attempt=attempt,
            spec_path=self.spec_path,
            checkpoint_dir=self.checkpoint_dir,
            control_plane_addr=plane.address,
            tracking_experiment=self.experiment,
            run_id=self.run_id,
        )
        return {**os.environ, "PYTHONPATH": str(REPO), **launch.to_env()}

    def start(self, plane: Plane, attempt: int, gpus: int = 0) -> subprocess.Popen[bytes]:
        """Starts attempt ``attempt`` of the trainer, appending its output to the job's log; with ``gpus``
        > 1 through torchrun as the executor starts it (``job_argv``), one process per GPU (in its own
        session, so that a test can stop all of them)."""
        argv = job_argv(pb.JobSpec(entrypoint=pb.Entrypoint(module=TRAINER[1]), gpus=gpus))
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed after it starts
        try:
            log.write(f"--- attempt {attempt} ---\n".encode())
            log.flush()
            return subprocess.Popen(
                argv, cwd=REPO, env=self.env(plane, attempt), stdout=log, stderr=log, start_new_session=True
            )
        finally:
            log.close()

    def run(self, plane: Plane, attempt: int = 1, timeout: float = 120, gpus: int = 0) -> int:
        process = self.start(plane, attempt, gpus)
        return process.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text()


def make_job(
    plane: Plane,
    data: Data,
    root: Path,
    name: str,
    hyperparameters: Mapping[str, object],
    *,
    checkpoint_every: int = 1,
) -> Job:
    """A job folder with the spec file the executor writes (``spec_to_json`` of an ``aether.v1.JobSpec``)
    and the tracking run the control plane creates at the first start."""
    spec = spec_from_mapping(
        {
            "name": name,
            "entrypoint": {"module": "control_plane.training.trainer"},
            "dataset": {
                "point_in_time": {"entity_rows_path": str(data.entity_rows_path), "features": ["stats"]}
            },
            "features": [f"stats@{data.version}:{f}" for f in FEATURES],
            "hyperparameters": dict(hyperparameters),
            "checkpoint_every_epochs": checkpoint_every,
        }
    )
    folder = root / name
    folder.mkdir(parents=True)
    spec_path = folder / "spec.json"
    spec_path.write_text(spec_to_json(spec))
    with TrackingClient(plane.address) as tracking:
        experiment = tracking.get_or_create_experiment(name).experiment_id
        run_id = tracking.create_run(experiment, name).run_id
    return Job(f"job-{name}", folder, spec_path, run_id, name)
