"""TLS and auth for the data plane, by configuration: with a certificate and key it serves TLS clients that
trust it and refuses plaintext ones; it follows a control plane that has auth and TLS on over an
authenticated TLS channel (the read-only token is enough), and without the token it cannot; the container
health check works against it with the CA in its environment, and against a plaintext data plane without."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.aether.v1 import feature_registry_pb2 as fr
from clients.inference import grpc_predict_v2_pb2 as oip
from clients.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from clients.sdk.auth import ChannelSecurity, open_aio_channel
from clients.tls import ServerTls
from control_plane.api.auth import AuthSettings
from control_plane.server import ControlPlaneServer
from control_plane.server import start_server as start_control_plane
from control_plane.settings import ControlPlaneSettings
from data_plane.catalog import RegistryState
from data_plane.server import DataPlaneHandle
from data_plane.server import start_server as start_data_plane
from data_plane.settings import DataPlaneSettings
from tests.integration.security.conftest import ADMIN_TOKEN, READONLY_TOKEN
from tests.unit.data_plane.registry_builders import entity, floats, view

pytestmark = pytest.mark.integration


@pytest.fixture
async def control_plane(
    tmp_path: Path, redis_url: str, certificate: ServerTls
) -> AsyncIterator[ControlPlaneServer]:
    """A control plane with auth on (admin and read-only tokens) listening with TLS only."""
    server = await start_control_plane(
        ControlPlaneSettings(
            home=tmp_path / "cp",
            db_url=f"sqlite:///{tmp_path / 'cp.db'}",
            redis_url=redis_url,
            listen_addr="127.0.0.1:0",
            watch_poll_interval_s=0.1,
            shutdown_grace_s=0.2,
            auth=AuthSettings(admin_token=ADMIN_TOKEN, readonly_token=READONLY_TOKEN),
            tls=certificate,
        )
    )
    yield server
    await server.stop()


def _settings(
    tmp_path: Path, redis_url: str, control_plane: str, tls: ServerTls | None, security: ChannelSecurity
) -> DataPlaneSettings:
    return DataPlaneSettings(
        near_cache_mb=0.0,  # see tests/conftest.py
        listen="127.0.0.1:0",
        redis_url=redis_url,
        control_plane_addr=control_plane,
        snapshot_path=tmp_path / "registry_snapshot.pb",
        watch_backoff_initial_s=0.05,
        watch_backoff_max_s=0.2,
        tls=tls,
        channel_security=security,
    )


async def _until(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def _knows_view(state: RegistryState, name: str) -> bool:
    return state.catalog is not None and name in state.catalog.views


async def _health(channel: grpc.aio.Channel) -> int:
    response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    status: int = response.status
    return status


def _healthcheck(address: str, ca: Path | None, service: str = "") -> int:
    """``python -m clients.healthcheck`` as a container runs it; its environment says whether to use TLS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AETHER_")}
    if ca is not None:
        env["AETHER_TLS_CA"] = str(ca)
    return subprocess.run(
        [sys.executable, "-m", "clients.healthcheck", address, service, "--timeout", "5"],
        env=env,
        capture_output=True,
        timeout=30,
    ).returncode


async def test_a_tls_data_plane_follows_an_authenticated_tls_control_plane(
    tmp_path: Path, redis_url: str, certificate: ServerTls, control_plane: ControlPlaneServer
) -> None:
    trust = ChannelSecurity(token=READONLY_TOKEN, ca_path=certificate.cert_path)
    data_plane: DataPlaneHandle = await start_data_plane(
        _settings(tmp_path, redis_url, control_plane.address, certificate, trust)
    )
    try:
        address = f"127.0.0.1:{data_plane.port}"
        # Both watches are connected through auth and TLS, and a new view reaches the data plane.
        await asyncio.wait_for(data_plane.watch.connected.wait(), 10)
        await asyncio.wait_for(data_plane.deployments.connected.wait(), 10)
        await asyncio.to_thread(control_plane.registry.create_entity, entity())
        await asyncio.to_thread(
            control_plane.registry.create_feature_view,
            view("stats", floats(2)).spec,
            fr.FeatureViewMetadata(),
        )
        await _until(lambda: _knows_view(data_plane.registry, "stats"))

        # A TLS client that trusts the certificate is served, on every API.
        async with open_aio_channel(address, ChannelSecurity(ca_path=certificate.cert_path)) as channel:
            assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
            stub = oip_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
            assert (await stub.ServerLive(oip.ServerLiveRequest(), timeout=5)).live
        # A plaintext client is refused.
        async with grpc.aio.insecure_channel(address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await _health(channel)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        # The container health check: healthy with the CA in its environment, not without.
        assert await asyncio.to_thread(_healthcheck, address, certificate.cert_path) == 0
        assert await asyncio.to_thread(_healthcheck, address, None) == 1
    finally:
        await data_plane.stop(None)


async def test_without_the_token_the_data_plane_cannot_follow_the_control_plane(
    tmp_path: Path, redis_url: str, certificate: ServerTls, control_plane: ControlPlaneServer
) -> None:
    await asyncio.to_thread(control_plane.registry.create_entity, entity())
    await asyncio.to_thread(
        control_plane.registry.create_feature_view, view("stats", floats(2)).spec, fr.FeatureViewMetadata()
    )
    no_token = ChannelSecurity(ca_path=certificate.cert_path)
    data_plane = await start_data_plane(_settings(tmp_path, redis_url, control_plane.address, None, no_token))
    try:
        await asyncio.sleep(1.0)  # several reconnect attempts, each refused UNAUTHENTICATED
        assert not data_plane.watch.connected.is_set() and not data_plane.deployments.connected.is_set()
        assert not _knows_view(data_plane.registry, "stats")
        # The plaintext data plane itself answers the container health check without any TLS setting
        # (inference is SERVING; the whole server is not, since it has no registry snapshot).
        address = f"127.0.0.1:{data_plane.port}"
        assert await asyncio.to_thread(_healthcheck, address, None, "inference.GRPCInferenceService") == 0
        assert await asyncio.to_thread(_healthcheck, address, None) == 1
    finally:
        await data_plane.stop(None)
