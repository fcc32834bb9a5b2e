"""A retrainer wired to real cores on a SQLite file and the shared redis-server: registry, deployments,
jobs (no supervisor: submitted jobs stay queued unless their entrypoint is missing), feature registry,
offline store, and a prediction log stream with labelled, sampled predictions of deployment ``eta``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest_asyncio
import redis.asyncio
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import model_registry_pb2 as mpb
from clients.aether.v1 import monitoring_pb2 as monpb
from clients.aether.v1 import retraining_pb2 as pb
from control_plane.artifacts.store import ArtifactStore
from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head
from control_plane.deployments.core import DeploymentManager
from control_plane.deployments.model_guard import DeploymentModelGuard
from control_plane.features.registry import FeatureRegistry
from control_plane.jobs.service import JobService
from control_plane.jobs.settings import JobsSettings
from control_plane.model_registry.registry import ModelRegistry
from control_plane.monitoring import config as monitor_configs
from control_plane.monitoring.feedback import IndexedPrediction, index_predictions, record_feedback
from control_plane.offline.store import OfflineStore
from control_plane.retraining import config as configs
from control_plane.retraining.loop import Retrainer, RetrainingSettings
from control_plane.retraining.model_guard import PromotionModelGuard
from tests.unit.retraining.models import linear

STREAM = "aether:test-predictions"
TRUE_W = np.array([1.0, -2.0, 0.5, 3.0])
HOLDOUT_ROWS = 200


@dataclass
class World:
    sessions: sessionmaker[Session]
    registry: ModelRegistry
    deployments: DeploymentManager
    jobs: JobService
    features: FeatureRegistry
    offline: OfflineStore
    client: redis.asyncio.Redis
    retrainer: Retrainer
    champion: int

    def register(self, onnx: bytes, approve: bool = False, run_id: str = "") -> int:
        artifact = self.registry.artifacts.put_bytes(onnx)
        request = mpb.CreateModelVersionRequest(
            model_name="eta", artifact_sha256=artifact.sha256, create_model=True, run_id=run_id
        )
        version = int(self.registry.create_version(request, actor="trainer").version)
        if approve:
            self.registry.review("eta", version, mpb.APPROVED, "first model", actor="reviewer")
        return version


def restarted(
    world: World, clock: Callable[[], float], sessions: sessionmaker[Session] | None = None
) -> Retrainer:
    """A fresh retrainer on the same database (through ``sessions`` when given: an engine of its own), as
    after a control-plane restart."""
    return Retrainer(
        sessions or world.sessions,
        world.registry,
        world.deployments,
        world.jobs,
        world.features,
        world.offline,
        world.client,
        RetrainingSettings(stream=STREAM),
        clock=clock,
    )


async def write_holdout(world: World, now_us: int) -> None:
    """Labelled production traffic: sampled served entries in the stream, indexed, with labels."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((HOLDOUT_ROWS, 4)).astype(np.float32)
    y = x.astype(np.float64) @ TRUE_W + rng.normal(0, 0.1, HOLDOUT_ROWS)
    indexed = []
    for i in range(HOLDOUT_ROWS):
        ts = now_us - 3_600_000_000 + i * 1000
        fields = {
            "request_id": f"r{i}", "deployment": "eta", "model": "eta", "version": str(world.champion),
            "variant": "eta-v1", "role": "served", "ts_us": str(ts), "ok": "1", "sampled": "1",
            "features": x[i : i + 1].tobytes(), "features_dtype": "float32", "features_shape": "1,4",
        }  # fmt: skip
        await world.client.xadd(STREAM, fields)  # type: ignore[arg-type]
        indexed.append(
            IndexedPrediction(f"r{i}", 0, "eta", "eta", world.champion, "eta-v1", ts, [0.0], False)
        )
    index_predictions(world.sessions, indexed)
    record_feedback(
        world.sessions, [monpb.Feedback(request_id=f"r{i}", row=0, label=y[i]) for i in range(HOLDOUT_ROWS)]
    )


@pytest_asyncio.fixture
async def world(tmp_path: Path, redis_url: str) -> AsyncIterator[World]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'aether.db'}")
    upgrade_to_head(engine)
    sessions = create_session_factory(engine)
    guards = [DeploymentModelGuard(), PromotionModelGuard()]  # as the control plane has them
    registry = ModelRegistry(sessions, ArtifactStore(str(tmp_path / "artifacts")), guards)
    deployments = DeploymentManager(sessions, registry)
    features = FeatureRegistry(sessions)
    offline = OfflineStore(str(tmp_path / "offline"))
    jobs = JobService(sessions, JobsSettings(folder=tmp_path / "jobs"), features, offline)
    client = redis.asyncio.Redis.from_url(redis_url)
    retrainer = Retrainer(
        sessions, registry, deployments, jobs, features, offline, client, RetrainingSettings(stream=STREAM)
    )
    world = World(sessions, registry, deployments, jobs, features, offline, client, retrainer, 0)
    world.champion = world.register(linear(TRUE_W + np.array([0.3, -0.3, 0.3, -0.3])), approve=True)
    registry.set_alias("eta", "champion", world.champion, actor="reviewer")
    deployments.create(
        dpb.CreateDeploymentRequest(
            name="eta",
            variants=[dpb.Variant(model_name="eta", version=world.champion, role=dpb.VARIANT_ROLE_PRIMARY)],
        ),
        actor="operator",
    )
    monitor_configs.put_config(
        sessions,
        monpb.MonitorConfig(deployment="eta", task=monpb.TASK_TYPE_REGRESSION, alert_metric="mae"),
        actor="operator",
    )
    configs.put_config(
        sessions,
        pb.TriggerConfig(
            deployment="eta",
            enabled=True,
            gates=pb.EvaluationGates(metric="mae", max_latency_ratio=-1),
            min_rows=3,
        ),
        actor="operator",
    )
    await write_holdout(world, time.time_ns() // 1000)
    yield world
    await client.aclose()
    engine.dispose()
