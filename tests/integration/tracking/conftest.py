"""A real control plane serving ``aether.v1.Tracking`` (and the artifact store) on a free loopback port,
over the ``db_url`` database, on its own event loop in a background thread so that the synchronous SDK
and CLI can be called in-process."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from clients.sdk.tracking import TrackingClient
from control_plane.api import artifacts, tracking
from control_plane.api.context import ServiceModule
from control_plane.server import ControlPlaneServer, start_server
from control_plane.settings import ControlPlaneSettings


class ThreadedControlPlane:
    def __init__(
        self,
        settings: ControlPlaneSettings,
        services: Sequence[ServiceModule] = (tracking.add_to_server, artifacts.add_to_server),
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="control-plane", daemon=True)
        self._thread.start()
        self.server: ControlPlaneServer = asyncio.run_coroutine_threadsafe(
            start_server(settings, services=services), self._loop
        ).result(timeout=60)
        self.address = self.server.address

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


def settings_for(home: Path, db_url: str, listen_addr: str = "127.0.0.1:0") -> ControlPlaneSettings:
    return ControlPlaneSettings(home=home, db_url=db_url, listen_addr=listen_addr, shutdown_grace_s=0.5)


@pytest.fixture
def control_plane(tmp_path: Path, db_url: str) -> Iterator[ThreadedControlPlane]:
    server = ThreadedControlPlane(settings_for(tmp_path / "home", db_url))
    yield server
    server.stop()


@pytest.fixture
def client(control_plane: ThreadedControlPlane) -> Iterator[TrackingClient]:
    with TrackingClient(control_plane.address, close_timeout_s=10.0) as tracking_client:
        yield tracking_client
