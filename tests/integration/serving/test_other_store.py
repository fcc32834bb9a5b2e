"""A data plane follows the metadata database its catalog and plans came from, not whichever one a control
plane at its address was started on: a real control plane on database A serves a feature view and a
deployment to a real data plane; restarted on an empty database B (a wrong ``AETHER_DB_URL``, a new
``AETHER_HOME``) at the same address, it streamed B's empty registry and plans, and the data plane applied
them: every deployment and every view answered NOT_FOUND, fleet-wide, without an error anywhere. The data
plane now refuses another database's snapshots, keeps serving, logs and counts the refusal, and follows B
only once restarted with ``accept_store_id`` naming it; a restart on database A itself goes unnoticed."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis

from clients.aether.v1 import inference_pb2_grpc
from clients.aether.v1 import online_features_pb2 as opb
from clients.aether.v1 import online_features_pb2_grpc as opb_grpc
from clients.sdk.deployments import DeploymentsClient, variant
from clients.sdk.inference import build_predict_request, decode_predict_response
from clients.sdk.models import ModelRegistryClient, signature
from clients.sdk.registry import FeatureRegistryClient
from control_plane.api import deployments as deployments_api
from control_plane.api import model_registry as model_registry_api
from control_plane.db import create_db_engine, create_session_factory
from control_plane.db.store_identity import read_store_id
from control_plane.deployments.model_guard import DeploymentModelGuard
from control_plane.features.online_writer import OnlineWriter
from control_plane.server import ControlPlaneServer, start_server
from control_plane.settings import ControlPlaneSettings
from data_plane.registry_watch import load_snapshot
from data_plane.server import DataPlaneHandle
from data_plane.server import start_server as start_data_plane
from data_plane.settings import DataPlaneSettings
from tests.integration.closed_loop.conftest import wait_serving
from tests.support import onnx_models
from tests.support.ports import HeldPort
from tests.unit.data_plane.registry_builders import entity, floats, view, writable

pytestmark = pytest.mark.integration

VIEW = "driver_stats"
DEPLOYMENT = "eta-prod"
#: Generous: the machine running the suite may be busy; every wait ends as soon as its condition holds.
WAIT_S = 30.0


@dataclass
class ControlPlane:
    """A control plane (feature registry, model registry, deployments) on one database, at a fixed
    address (held by the test: ``HeldPort``) so that another can take its place."""

    address: str
    db_url: str
    home: Path
    redis_url: str
    server: ControlPlaneServer | None = None

    async def start(self, db_url: str | None = None) -> None:
        self.db_url = db_url or self.db_url
        settings = ControlPlaneSettings(
            home=self.home, db_url=self.db_url, redis_url=self.redis_url, listen_addr=self.address,
            shutdown_grace_s=0.5, watch_poll_interval_s=0.1,
        )  # fmt: skip
        services = [
            *model_registry_api.services([DeploymentModelGuard()]),
            deployments_api.services(run_canary_loop=False),
        ]
        self.server = await start_server(settings, services=services)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    def store_id(self) -> str:
        engine = create_db_engine(self.db_url)
        try:
            return read_store_id(create_session_factory(engine))
        finally:
            engine.dispose()


async def call(function: Callable[..., object], *args: object, **kwargs: object) -> object:
    return await asyncio.to_thread(function, *args, **kwargs)


async def _serve_a_view_and_a_deployment(plane: ControlPlane, tmp_path: Path) -> int:
    """Registers the view (its online rows written to Redis) and a model reading it, deploys the model,
    and returns the deployment's plan revision."""
    with FeatureRegistryClient(plane.address) as registry:
        await call(registry.create_entity, entity())
        created = await asyncio.to_thread(registry.create_feature_view, view(VIEW, floats(4)).spec)
    client = redis.Redis.from_url(plane.redis_url)
    try:
        values = np.arange(8, dtype=np.float32).reshape(2, 4) + 1.0
        OnlineWriter(client).write(writable(created), [["1"], ["2"]], values, time.time_ns() // 1000)
    finally:
        client.close()
    spec = onnx_models.save(onnx_models.mlp(input_size=4, hidden=(4,)), tmp_path / "eta.onnx", "eta")
    declared = signature(
        [(t.name, t.dtype, t.shape) for t in spec.inputs], [(t.name, t.dtype, t.shape) for t in spec.outputs]
    )
    refs = [f"{VIEW}@1:f{i}" for i in range(4)]
    with ModelRegistryClient(plane.address, actor="trainer", timeout=20) as models:
        version = await asyncio.to_thread(
            models.register_version, "eta", tmp_path / "eta.onnx", signature=declared, feature_refs=refs
        )
        await call(models.approve, "eta", version.version, "evaluated")
    with DeploymentsClient(plane.address, actor="alice", timeout=20) as deployments:
        deployed = await asyncio.to_thread(deployments.create, DEPLOYMENT, [variant("eta", version.version)])
    return int(deployed.plan_revision)


async def _predict(address: str) -> tuple[str, int]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]
        answer = await stub.Predict(build_predict_request(DEPLOYMENT, [{"driver_id": 1}]), timeout=20)
        result = decode_predict_response(answer)
        return result.model_name, result.model_version


async def _features(address: str) -> opb.GetOnlineFeaturesResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = opb_grpc.OnlineFeaturesStub(channel)  # type: ignore[no-untyped-call]
        request = opb.GetOnlineFeaturesRequest(
            features=[f"{VIEW}:f0"], rows=[opb.EntityRow(keys={"driver_id": "1"})]
        )
        answer: opb.GetOnlineFeaturesResponse = await stub.GetOnlineFeatures(request, timeout=20)
        return answer


def _refused(handle: DataPlaneHandle, watch: str) -> float:
    labels = {"watch": watch, "reason": "other_store"}
    return handle.metrics.registry.get_sample_value("aether_watch_refused_total", labels) or 0.0


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


@pytest.fixture
async def plane(redis_url: str, tmp_path: Path) -> AsyncIterator[ControlPlane]:
    # The address is held for the whole test, so no other process takes it while the plane restarts.
    with HeldPort() as held:
        found = ControlPlane(held.address, f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "home", redis_url)
        await found.start()
        yield found
        await found.stop()


def _data_plane_settings(plane: ControlPlane, tmp_path: Path) -> DataPlaneSettings:
    return DataPlaneSettings(
        near_cache_mb=0.0,  # see tests/conftest.py
        listen="127.0.0.1:0",
        redis_url=plane.redis_url,
        control_plane_addr=plane.address,
        snapshot_path=tmp_path / "data_plane" / "registry_snapshot.pb",
        watch_backoff_initial_s=0.05,
        watch_backoff_max_s=0.5,
        engine_cache_dir=tmp_path / "engines",
    )


async def test_a_control_plane_on_another_database_does_not_empty_the_data_plane(
    plane: ControlPlane, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    revision = await _serve_a_view_and_a_deployment(plane, tmp_path)
    store_a = plane.store_id()
    settings = _data_plane_settings(plane, tmp_path)
    handle = await start_data_plane(settings)
    try:
        address = f"127.0.0.1:{handle.port}"
        await wait_serving(address)
        await handle.deployments.wait_for_revision(revision, WAIT_S)
        assert await _predict(address) == ("eta", 1)
        served = await _features(address)

        # The operator restarts the control plane with a wrong AETHER_DB_URL: an empty database B.
        caplog.set_level(logging.ERROR, logger="aether.data_plane.watch_stream")
        await plane.stop()
        await plane.start(f"sqlite:///{tmp_path / 'b.db'}")
        store_b = plane.store_id()
        assert store_b != store_a

        def b_reached_it() -> bool:
            """B's first snapshots reached both watches: refused, or (as before the fix) applied."""
            refused = _refused(handle, "registry") >= 1 and _refused(handle, "deployment_plans") >= 1
            catalog = handle.registry.catalog
            emptied = handle.deployments.current().get(DEPLOYMENT) is None or (
                catalog is not None and not catalog.snapshot.views
            )
            return refused or emptied

        await _until(b_reached_it, "database B's snapshots never reached the data plane")
        assert await _predict(address) == ("eta", 1)  # served as before, not NOT_FOUND
        assert await _features(address) == served
        assert handle.watch.store_id == handle.deployments.store_id == store_a
        assert handle.deployments.current().get(DEPLOYMENT) is not None
        assert handle.watch.refused_store_id == handle.deployments.refused_store_id == store_b
        persisted = load_snapshot(settings.snapshot_path)  # the file still holds A's catalog
        assert persisted is not None and persisted.store_id == store_a
        assert [v.spec.name for v in persisted.views] == [VIEW]
        refusals = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        for what in ("registry", "deployment plans"):
            said = [m for m in refusals if m.startswith(f"{what} watch on {plane.address}: refusing")]
            assert len(said) == 1, refusals
            assert store_a in said[0] and f"--accept-store-id {store_b}" in said[0]

        # Another snapshot of B on the same stream: refused and counted, not logged again.
        with FeatureRegistryClient(plane.address) as registry:
            await call(registry.create_entity, entity("rider", (("rider_id", "int64"),)))
        await _until(lambda: _refused(handle, "registry") >= 2, "B's second snapshot was not refused")
        said = [r for r in caplog.records if r.getMessage().startswith(f"registry watch on {plane.address}")]
        assert len(said) == 1
        assert await _predict(address) == ("eta", 1)
    finally:
        await handle.stop(None)

    # Deliberately accepted: restarted with B's id, the data plane follows B (nothing is deployed there).
    handle = await start_data_plane(dataclasses.replace(settings, accept_store_id=store_b))
    try:
        address = f"127.0.0.1:{handle.port}"
        await _until(
            lambda: handle.watch.store_id == handle.deployments.store_id == store_b,
            "the data plane did not follow the accepted database",
        )
        with pytest.raises(grpc.aio.AioRpcError) as no_deployment:
            await _predict(address)
        assert no_deployment.value.code() is grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as no_view:
            await _features(address)
        assert no_view.value.code() is grpc.StatusCode.NOT_FOUND
        persisted = load_snapshot(settings.snapshot_path)
        assert persisted is not None and persisted.store_id == store_b
    finally:
        await handle.stop(None)


async def test_a_control_plane_restarted_on_the_same_database_is_followed_silently(
    plane: ControlPlane, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    revision = await _serve_a_view_and_a_deployment(plane, tmp_path)
    store_a = plane.store_id()
    handle = await start_data_plane(_data_plane_settings(plane, tmp_path))
    try:
        address = f"127.0.0.1:{handle.port}"
        await handle.deployments.wait_for_revision(revision, WAIT_S)
        caplog.set_level(logging.WARNING, logger="aether.data_plane.watch_stream")
        await plane.stop()
        await plane.start()  # the same database A
        with DeploymentsClient(plane.address, actor="alice", timeout=20) as deployments:
            second = await asyncio.to_thread(deployments.create, "eta-second", [variant("eta", 1)])
        await handle.deployments.wait_for_revision(int(second.plan_revision), WAIT_S)
        assert handle.deployments.current().get("eta-second") is not None
        with FeatureRegistryClient(plane.address) as registry:
            await call(registry.create_entity, entity("rider", (("rider_id", "int64"),)))

        def rider_known() -> bool:
            catalog = handle.registry.catalog
            return catalog is not None and "rider" in [e.name for e in catalog.snapshot.entities]

        await _until(rider_known, "the registry change on database A was not followed")
        assert handle.watch.store_id == handle.deployments.store_id == store_a
        assert _refused(handle, "registry") == _refused(handle, "deployment_plans") == 0
        assert not [r for r in caplog.records if "refusing" in r.getMessage()]
        assert await _predict(address) == ("eta", 1)
    finally:
        await handle.stop(None)
