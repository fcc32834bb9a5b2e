"""A real control plane serving monitoring (its monitor loop reading a real Redis stream fast), a real
webhook receiver on 127.0.0.1, prediction-log entries written by the data plane's own writer, and model
versions with reference profiles registered through the cores on the same database."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc.aio
import numpy as np
import numpy.typing as npt
import pytest
from prometheus_client import CollectorRegistry

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import model_registry_pb2 as mpb
from clients.aether.v1 import monitoring_pb2_grpc as pb_grpc
from control_plane.api import monitoring as monitoring_api
from control_plane.api.auth import AuthSettings
from control_plane.api.context import ServiceModule
from control_plane.artifacts.settings import store_for
from control_plane.deployments.core import DeploymentManager
from control_plane.model_registry.registry import ModelRegistry
from control_plane.monitoring.settings import MonitoringSettings
from control_plane.server import ControlPlaneServer, start_server
from control_plane.settings import ControlPlaneSettings
from data_plane.prediction_log import PredictionLog, PredictionRecord
from data_plane.redis_client import RedisClient

STREAM = "test:monitoring:predictions"


class Webhook:
    """An HTTP server on a free loopback port keeping every JSON body POSTed to it."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []
        paths: list[str] = []
        self.received = received
        self.paths = paths  # the path each body was POSTed to, in order

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(json.loads(body))
                paths.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.url = f"{self.origin}/alerts"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [alert for alert in self.received if alert["kind"] == kind]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


@dataclass
class Plane:
    server: ControlPlaneServer
    channel: grpc.aio.Channel
    stub: pb_grpc.MonitoringStub
    registry: ModelRegistry
    gauges: CollectorRegistry
    redis_url: str
    home: Path
    _log_writer: list[PredictionLog] = field(default_factory=list)

    def register_version(self, name: str) -> int:
        artifact = self.registry.artifacts.put_bytes(f"onnx bytes of {name}".encode())
        request = mpb.CreateModelVersionRequest(
            model_name=name, artifact_sha256=artifact.sha256, create_model=True
        )
        return int(self.registry.create_version(request, actor="trainer").version)

    def deploy(self, name: str, version: int = 0) -> None:
        """Creates deployment ``name`` serving ``version`` of ``<name>-model`` (a new one unless given),
        approved: monitoring refuses to configure a deployment that does not exist."""
        model = f"{name}-model"
        version = version or self.register_version(model)
        self.registry.review(model, version, mpb.APPROVED, "to monitor", actor="reviewer")
        variant = dpb.Variant(model_name=model, version=version, role=dpb.VARIANT_ROLE_PRIMARY)
        DeploymentManager(self.server.context.sessions, self.registry).create(
            dpb.CreateDeploymentRequest(name=name, variants=[variant]), actor="operator"
        )

    async def log(self, records: Sequence[PredictionRecord]) -> None:
        """Appends ``records`` with the data plane's prediction log and waits until they are written."""
        client = RedisClient(self.redis_url)
        # A write timeout for a loaded CI host: the default second dropped a batch whose first dial to
        # Redis took longer while the suite ran four workers on two cores (dropped, as the data plane
        # should; but these tests need every entry written).
        writer = PredictionLog(client, STREAM, sample_rate=1.0, maxlen=1_000_000, timeout_s=10.0)
        writer.start()
        for record in records:
            writer.record(record)

        async def flushed() -> bool:
            return writer.written + writer.dropped == len(records)

        # Wait for the writer's own task to drain the buffer: stop() cancels a batch still in flight.
        await eventually(flushed)
        await writer.stop()
        await client.close()
        assert writer.written == len(records) and writer.dropped == 0


@pytest.fixture
async def plane(tmp_path: Path, db_url: str, redis_url: str) -> AsyncIterator[Plane]:
    async with open_plane(tmp_path, db_url, redis_url) as opened:
        yield opened


@contextlib.asynccontextmanager
async def open_plane(
    tmp_path: Path,
    db_url: str,
    redis_url: str,
    auth: AuthSettings | None = None,
    more: Sequence[ServiceModule] = (),
) -> AsyncIterator[Plane]:
    """A control plane serving monitoring (and ``more`` services) with ``auth`` (default: off); the
    plane's ``stub`` sends no token."""
    settings = ControlPlaneSettings(
        home=tmp_path,
        db_url=db_url,
        redis_url=redis_url,
        listen_addr="127.0.0.1:0",
        shutdown_grace_s=0.5,
        auth=auth or AuthSettings(),
    )
    monitor_settings = MonitoringSettings(
        interval_s=0.05, stream=STREAM, performance_interval_s=0.1, time_window_grace_s=0.0
    )
    gauges = CollectorRegistry()
    server = await start_server(
        settings, services=[monitoring_api.services(monitor_settings, registry=gauges), *more]
    )
    registry = ModelRegistry(server.context.sessions, store_for(tmp_path))
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.MonitoringStub(channel)  # type: ignore[no-untyped-call]
            yield Plane(server, channel, stub, registry, gauges, redis_url, tmp_path)
    finally:
        await server.stop()


def record(
    request_id: str,
    features: npt.NDArray[np.float64],
    outputs: dict[str, npt.NDArray[Any]],
    ts_us: int,
    deployment: str = "churn",
    model: str = "churn-model",
    version: int = 1,
) -> PredictionRecord:
    return PredictionRecord(
        request_id=request_id,
        deployment=deployment,
        model=model,
        version=version,
        variant="primary",
        role="served",
        routing_key="",
        ts_us=ts_us,
        entities=[{"id": str(i)} for i in range(features.shape[0])],
        features=features.astype(np.float32),
        outputs=outputs,
    )


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 60.0) -> None:
    # A bound, not a pace: the check is polled every 50 ms and passes as soon as it holds. 60 s because a
    # monitor tick (stream read, window scoring, a report stored on PostgreSQL) beside two other test
    # workers on a 2-core CI host has taken over 20 s.
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)
