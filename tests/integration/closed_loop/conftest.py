"""The whole serving stack, for real, in one event loop: a control plane (``control_plane.server
.start_server``: feature and model registries, artifacts, deployments with the canary controller ticking
every 0.1 s, audit) on the ``db_url`` database, a data plane (``data_plane.server.start_server``) following
its registry and deployment plans, and one real Redis for online features and the prediction log.

The stack holds one feature view (four float32 features of 64 drivers, all ≥ 1, which is what breaks the
failing model) and registers approved model versions from real ONNX files, uploaded through the SDK."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc.aio
import numpy as np
import onnx
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.sdk.deployments import DeploymentsClient
from clients.sdk.models import ModelRegistryClient, signature
from clients.sdk.registry import FeatureRegistryClient
from control_plane.api import deployments as deployments_api
from control_plane.deployments.canary_loop import CanaryLoopSettings
from control_plane.features.online_writer import OnlineWriter
from control_plane.server import DEFAULT_SERVICES, ControlPlaneServer
from control_plane.server import start_server as start_control_plane
from control_plane.settings import ControlPlaneSettings
from data_plane.server import DataPlaneHandle
from data_plane.server import start_server as start_data_plane
from data_plane.settings import DataPlaneSettings
from tests.support import onnx_models
from tests.unit.data_plane.registry_builders import entity, floats, view, writable

T = TypeVar("T")

STREAM = "closed-loop:predictions"
DRIVERS = 64
FEATURE_VIEW = "driver_stats"
#: What every registered model reads, in input order (the registry wants each feature by version).
FEATURE_REFS = [f"{FEATURE_VIEW}@1:f{i}" for i in range(4)]
CANARY_INTERVAL_S = 0.1


@dataclass
class Stack:
    control_plane: ControlPlaneServer
    data_plane: DataPlaneHandle
    deployments: DeploymentsClient
    models: ModelRegistryClient
    redis_url: str
    db_url: str
    artifacts: Path

    @property
    def data_plane_address(self) -> str:
        return f"127.0.0.1:{self.data_plane.port}"

    async def register(self, model_name: str, model: onnx.ModelProto, file_name: str) -> int:
        """Uploads ``model`` as the next version of ``model_name`` (reading the driver view); approves it."""
        path = self.artifacts / file_name
        path.write_bytes(model.SerializeToString())
        spec = onnx_models.save(model, path, model_name)
        declared = signature(
            [(t.name, t.dtype, t.shape) for t in spec.inputs],
            [(t.name, t.dtype, t.shape) for t in spec.outputs],
        )
        version = await call(
            self.models.register_version, model_name, path, signature=declared, feature_refs=FEATURE_REFS
        )
        await call(self.models.approve, model_name, version.version, "closed-loop test")
        return int(version.version)

    async def plans_at(self, revision: int) -> None:
        """Returns once the data plane serves the plans of ``revision`` (their models loaded)."""
        await self.data_plane.deployments.wait_for_revision(revision, 20)


async def call(function: Callable[..., T], *args: object, **kwargs: object) -> T:
    """A synchronous SDK call, off the event loop that also runs both planes."""
    return await asyncio.to_thread(function, *args, **kwargs)


async def wait_serving(address: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            answer = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                return
            assert time.monotonic() < deadline, f"{address} did not become SERVING"
            await asyncio.sleep(0.05)


def _services() -> list[object]:
    """The control plane's default services, with the canary controller ticking fast on our stream."""
    fast = deployments_api.services(CanaryLoopSettings(interval_s=CANARY_INTERVAL_S, stream=STREAM))
    return [fast if add is deployments_api.add_to_server else add for add in DEFAULT_SERVICES]


async def _features(address: str, redis_url: str) -> None:
    with FeatureRegistryClient(address) as registry:
        await call(registry.create_entity, entity())
        created = await call(registry.create_feature_view, view(FEATURE_VIEW, floats(4)).spec)
    values = 1.0 + np.random.default_rng(0).random((DRIVERS, 4), dtype=np.float32) * 4.0
    client = redis.Redis.from_url(redis_url)
    try:
        OnlineWriter(client).write(
            writable(created), [[str(d)] for d in range(DRIVERS)], values, time.time_ns() // 1000
        )
    finally:
        client.close()


@pytest.fixture
async def stack(db_url: str, redis_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    control_plane = await start_control_plane(
        ControlPlaneSettings(
            home=tmp_path / "home",
            db_url=db_url,
            redis_url=redis_url,
            listen_addr="127.0.0.1:0",
            shutdown_grace_s=0.5,
            watch_poll_interval_s=0.1,
        ),
        services=_services(),  # type: ignore[arg-type]
    )
    deployments = DeploymentsClient(control_plane.address, actor="alice", timeout=20)
    models = ModelRegistryClient(control_plane.address, actor="trainer", timeout=20)
    data_plane: DataPlaneHandle | None = None
    try:
        await _features(control_plane.address, redis_url)
        data_plane = await start_data_plane(
            DataPlaneSettings(
                near_cache_mb=0.0,  # see tests/conftest.py
                listen="127.0.0.1:0",
                redis_url=redis_url,
                control_plane_addr=control_plane.address,
                snapshot_path=tmp_path / "data_plane" / "registry_snapshot.pb",
                prediction_log_stream=STREAM,
                watch_backoff_initial_s=0.05,
                watch_backoff_max_s=0.5,
                engine_cache_dir=tmp_path / "engines",
                # This stack runs the control plane, the data plane and the tests' load on one event loop:
                # on a loaded CI host the 0.5 s default bound on a Redis reply measured that loop's turns
                # (an UNAVAILABLE seen once under a rollback under load), not Redis. The bound itself is
                # tested against a stalled Redis (tests/integration/data_plane/test_redis_client.py).
                redis_timeout_s=5.0,
            )
        )
        await wait_serving(f"127.0.0.1:{data_plane.port}")
        artifacts = tmp_path / "onnx"
        artifacts.mkdir()
        yield Stack(control_plane, data_plane, deployments, models, redis_url, db_url, artifacts)
    finally:
        if data_plane is not None:
            await data_plane.stop(0.5)
        deployments.close()
        models.close()
        await control_plane.stop()
