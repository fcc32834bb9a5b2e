"""The container health check answers from a real control plane, and fails when nothing listens."""

from __future__ import annotations

import asyncio
from pathlib import Path

from clients.healthcheck import check
from control_plane.server import start_server
from control_plane.settings import ControlPlaneSettings
from tests.support.ports import refused_address


async def test_healthcheck_reports_serving_then_failure(tmp_path: Path) -> None:
    settings = ControlPlaneSettings(
        home=tmp_path, db_url=f"sqlite:///{tmp_path / 'a.db'}", listen_addr="127.0.0.1:0"
    )
    server = await start_server(settings)
    try:
        assert await asyncio.to_thread(check, server.address)
        assert await asyncio.to_thread(check, server.address, "aether.v1.FeatureRegistry")
        assert not await asyncio.to_thread(check, server.address, "no.such.Service")
    finally:
        await server.stop()
    assert not check(refused_address(), timeout_s=0.5)
