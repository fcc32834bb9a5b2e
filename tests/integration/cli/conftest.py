"""A real control plane for the CLI tests: the gRPC server on loopback with a fresh SQLite file, run on
its own event loop in a background thread so that the synchronous CLI can be called in-process."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from control_plane.server import ControlPlaneServer, start_server
from control_plane.settings import ControlPlaneSettings


class ThreadedControlPlane:
    def __init__(self, settings: ControlPlaneSettings) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="control-plane", daemon=True)
        self._thread.start()
        self._server: ControlPlaneServer = asyncio.run_coroutine_threadsafe(
            start_server(settings), self._loop
        ).result(timeout=60)
        self.address = self._server.address
        # The server's own database sessions, for a test that stores what no RPC writes (drift reports,
        # retraining decisions) in the database the server reads.
        self.sessions = self._server.context.sessions

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


@pytest.fixture
def control_plane_server(tmp_path: Path, redis_url: str) -> Iterator[ThreadedControlPlane]:
    """A control plane with an empty registry."""
    settings = ControlPlaneSettings(
        home=tmp_path / "home",
        db_url=f"sqlite:///{tmp_path / 'aether.db'}",
        redis_url=redis_url,
        listen_addr="127.0.0.1:0",
        shutdown_grace_s=0.5,
    )
    server = ThreadedControlPlane(settings)
    yield server
    server.stop()


@pytest.fixture
def control_plane(control_plane_server: ThreadedControlPlane) -> str:
    """``HOST:PORT`` of a control plane with an empty registry."""
    return control_plane_server.address
