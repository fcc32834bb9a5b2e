"""A real control plane (on its own event loop in a background thread, so the synchronous SDK can call
it) serving the model registry with the deployments guard plugged in, and deployments with the canary
controller reading a real Redis prediction-log stream; plus a way to register approved, pending and
rejected model versions straight through the registry core on the same database."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from clients.aether.v1 import model_registry_pb2 as mpb
from clients.sdk.deployments import DeploymentsClient
from control_plane.api import deployments as deployments_api
from control_plane.api import model_registry as model_registry_api
from control_plane.artifacts.settings import store_for
from control_plane.db import create_db_engine, create_session_factory
from control_plane.deployments.canary_loop import CanaryLoopSettings
from control_plane.deployments.model_guard import DeploymentModelGuard
from control_plane.model_registry.registry import ModelRegistry
from control_plane.server import ControlPlaneServer, start_server
from control_plane.settings import ControlPlaneSettings

STREAM = "test:prediction_log"


class ThreadedControlPlane:
    def __init__(self, settings: ControlPlaneSettings) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="control-plane", daemon=True)
        self._thread.start()
        start = start_server(
            settings,
            services=[
                *model_registry_api.services([DeploymentModelGuard()]),
                deployments_api.services(CanaryLoopSettings(interval_s=0.05, stream=STREAM)),
            ],
        )
        self._server: ControlPlaneServer = asyncio.run_coroutine_threadsafe(start, self._loop).result(60)
        self.address = self._server.address
        self.context = self._server.context

    def stop(self) -> None:
        """Stops the server and its loop; stopping twice is harmless."""
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


class Models:
    """Registers versions of models through the registry core (what ``aetherctl models`` does)."""

    def __init__(self, db_url: str, home: Path) -> None:
        self._engine = create_db_engine(db_url)
        self.registry = ModelRegistry(create_session_factory(self._engine), store_for(home))

    def register(self, name: str, status: int = mpb.APPROVED, *, imputes_missing: bool = False) -> int:
        artifact = self.registry.artifacts.put_bytes(f"onnx bytes of {name} {id(self)}".encode())
        request = mpb.CreateModelVersionRequest(
            model_name=name,
            artifact_sha256=artifact.sha256,
            signature=mpb.ModelSignature(
                inputs=[mpb.TensorSpec(name="x", dtype="float32", shape=[-1, 4])],
                outputs=[mpb.TensorSpec(name="y", dtype="float32", shape=[-1, 1])],
                imputes_missing=imputes_missing,
            ),
            create_model=True,
        )
        version = self.registry.create_version(request, actor="trainer").version
        if status != mpb.PENDING_MANUAL_APPROVAL:
            self.registry.review(name, version, status, "evaluated", actor="reviewer")  # type: ignore[arg-type]
        return version

    def close(self) -> None:
        self._engine.dispose()


@dataclass
class Plane:
    address: str
    home: Path
    db_url: str
    redis_url: str
    server: ThreadedControlPlane


@pytest.fixture
def plane(tmp_path: Path, redis_url: str) -> Iterator[Plane]:
    home = tmp_path / "home"
    db_url = f"sqlite:///{tmp_path / 'aether.db'}"
    settings = ControlPlaneSettings(
        home=home,
        db_url=db_url,
        redis_url=redis_url,
        listen_addr="127.0.0.1:0",
        shutdown_grace_s=0.5,
        watch_poll_interval_s=0.1,
    )
    server = ThreadedControlPlane(settings)
    yield Plane(server.address, home, db_url, redis_url, server)
    server.stop()


@pytest.fixture
def models(plane: Plane) -> Iterator[Models]:
    found = Models(plane.db_url, plane.home)
    yield found
    found.close()


@pytest.fixture
def deployments(plane: Plane) -> Iterator[DeploymentsClient]:
    with DeploymentsClient(plane.address, actor="alice", timeout=20) as client:
        yield client


def wait_until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
