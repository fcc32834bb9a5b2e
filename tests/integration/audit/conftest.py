"""A real control plane serving the audit service next to the feature registry, on a fresh metadata
database of every backend (``db_url``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc.aio
import pytest

from control_plane.api.audit import add_to_server
from control_plane.server import ControlPlaneServer, start_server
from control_plane.settings import ControlPlaneSettings


@pytest.fixture
async def server(tmp_path: Path, db_url: str) -> AsyncIterator[ControlPlaneServer]:
    settings = ControlPlaneSettings(
        home=tmp_path, db_url=db_url, listen_addr="127.0.0.1:0", shutdown_grace_s=0.5
    )
    handle = await start_server(settings, services=[add_to_server])
    yield handle
    await handle.stop()


@pytest.fixture
async def channel(server: ControlPlaneServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield channel
