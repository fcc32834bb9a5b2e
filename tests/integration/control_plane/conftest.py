"""A real control-plane gRPC server on a free loopback port, over a fresh metadata database on every
backend ``db_url`` (tests/conftest.py) provides: a SQLite file and a PostgreSQL database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc.aio
import pytest

from clients.aether.v1.feature_registry_pb2_grpc import FeatureRegistryStub
from control_plane.server import ControlPlaneServer, start_server
from control_plane.settings import ControlPlaneSettings


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> ControlPlaneSettings:
    return ControlPlaneSettings(
        home=tmp_path,
        db_url=db_url,
        listen_addr="127.0.0.1:0",
        watch_poll_interval_s=0.1,
    )


@pytest.fixture
async def server(settings: ControlPlaneSettings) -> AsyncIterator[ControlPlaneServer]:
    handle = await start_server(settings)
    yield handle
    await handle.stop()


@pytest.fixture
async def channel(server: ControlPlaneServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield channel


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> FeatureRegistryStub:
    return FeatureRegistryStub(channel)  # type: ignore[no-untyped-call]
