"""Stopping the control plane awaits what its services registered to run at close, so background loops
(canary controller, drift monitor, retraining loop) have ended, and closed their Redis clients, before
``stop`` returns; a loop merely cancelled could still be closing when the event loop closes, and be
destroyed pending."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc.aio

from control_plane.api.context import ServiceContext
from control_plane.server import DEFAULT_SERVICES, start_server
from control_plane.settings import ControlPlaneSettings

LOOPS = {"canary-loop", "drift-monitor", "retraining-loop"}


async def test_stop_awaits_every_close_callback_and_every_background_loop(
    tmp_path: Path, redis_url: str
) -> None:
    closed: list[str] = []

    def slow_closer(server: grpc.aio.Server, context: ServiceContext) -> str:
        async def close() -> None:
            await asyncio.sleep(0.2)  # longer than the shutdown grace below
            closed.append("slow")

        context.on_close.append(close)
        return "test.SlowCloser"

    settings = ControlPlaneSettings(
        home=tmp_path / "home",
        db_url=f"sqlite:///{tmp_path / 'aether.db'}",
        redis_url=redis_url,
        listen_addr="127.0.0.1:0",
        shutdown_grace_s=0.0,
    )
    server = await start_server(settings, services=(*DEFAULT_SERVICES, slow_closer))
    running = {t.get_name(): t for t in asyncio.all_tasks() if t.get_name() in LOOPS}
    assert set(running) == LOOPS  # the default services start all three
    await server.stop()
    assert closed == ["slow"]
    assert all(task.done() for task in running.values())
