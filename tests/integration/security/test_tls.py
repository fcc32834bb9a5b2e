"""TLS by configuration: a server with a certificate and key accepts TLS clients that trust it and
refuses plaintext clients and clients that trust another certificate; TLS and the bearer token work
together through the SDK's channel helper."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.errors import Unauthenticated
from clients.sdk.audit import AuditClient
from clients.sdk.auth import ChannelSecurity, open_aio_channel
from clients.tls import ServerTls
from control_plane.api.auth import AuthInterceptor
from tests.integration.security.conftest import (
    ADMIN_TOKEN,
    GRANTS,
    READONLY_TOKEN,
    SecuredServer,
    make_certificate,
    serve,
)


@pytest.fixture
async def tls_server(db_url: str, certificate: ServerTls) -> AsyncIterator[SecuredServer]:
    async for server in serve(db_url, [AuthInterceptor(GRANTS)], tls=certificate):
        yield server


async def _health(channel: grpc.aio.Channel) -> int:
    response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    status: int = response.status
    return status


async def test_a_tls_server_accepts_a_tls_client(tls_server: SecuredServer, certificate: ServerTls) -> None:
    async with open_aio_channel(
        tls_server.address, ChannelSecurity(ca_path=certificate.cert_path)
    ) as channel:
        assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
    # By name as well as by address: the certificate names both.
    localhost = tls_server.address.replace("127.0.0.1", "localhost")
    async with open_aio_channel(localhost, ChannelSecurity(ca_path=certificate.cert_path)) as channel:
        assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING


async def test_a_tls_server_rejects_a_plaintext_client(tls_server: SecuredServer) -> None:
    async with grpc.aio.insecure_channel(tls_server.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await _health(channel)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_client_trusting_another_certificate_is_refused(
    tls_server: SecuredServer, tmp_path: Path
) -> None:
    stranger = make_certificate(tmp_path, "stranger")
    async with open_aio_channel(tls_server.address, ChannelSecurity(ca_path=stranger.cert_path)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await _health(channel)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_tls_and_token_together_through_the_sync_sdk(
    tls_server: SecuredServer, certificate: ServerTls
) -> None:
    def verify(token: str | None) -> int:
        security = ChannelSecurity(token=token, ca_path=certificate.cert_path)
        with AuditClient(tls_server.address, security=security) as client:
            return client.verify().entries_checked

    assert await asyncio.to_thread(verify, READONLY_TOKEN) == 0
    assert await asyncio.to_thread(verify, ADMIN_TOKEN) == 0
    with pytest.raises(Unauthenticated):
        await asyncio.to_thread(verify, None)


def test_settings_from_the_environment(tmp_path: Path, certificate: ServerTls) -> None:
    assert ServerTls.from_env({}) is None
    pair = {"AETHER_TLS_CERT": str(certificate.cert_path), "AETHER_TLS_KEY": str(certificate.key_path)}
    assert ServerTls.from_env(pair) == certificate
    with pytest.raises(ValueError, match="both"):
        ServerTls.from_env({"AETHER_TLS_CERT": "/c.pem"})
    token_file = tmp_path / "token"
    token_file.write_text(" from-file \n")
    ca = str(certificate.cert_path)
    security = ChannelSecurity.from_env({"AETHER_TOKEN_FILE": str(token_file), "AETHER_TLS_CA": ca})
    assert (security.token, security.ca_path) == ("from-file", certificate.cert_path)
    assert ChannelSecurity.from_env({"AETHER_TOKEN": "t"}).metadata() == [("authorization", "Bearer t")]
    assert "from-file" not in repr(security)


def _bad_pairs(tmp_path: Path, certificate: ServerTls) -> dict[str, tuple[Path, Path, str]]:
    other = make_certificate(tmp_path, "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cert, key = certificate.cert_path, certificate.key_path
    return {
        "missing": (tmp_path / "nope.pem", key, f"AETHER_TLS_CERT: cannot read {tmp_path / 'nope.pem'}"),
        "mismatched": (cert, other.key_path, "not a PEM certificate and its private key"),
        "swapped": (key, cert, "not a PEM certificate and its private key"),
        "garbage": (garbage, garbage, "not a PEM certificate and its private key"),
    }


def test_a_bad_certificate_and_key_pair_is_refused_naming_the_variables(
    tmp_path: Path, certificate: ServerTls
) -> None:
    """gRPC took any bytes and failed at bind time: "Failed to bind to address", a traceback."""
    for cert, key, message in _bad_pairs(tmp_path, certificate).values():
        with pytest.raises(ValueError, match=message) as caught:
            ServerTls.from_env({"AETHER_TLS_CERT": str(cert), "AETHER_TLS_KEY": str(key)})
        assert "AETHER_TLS_CERT" in str(caught.value)


def _run(module: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {key: value for key, value in os.environ.items() if not key.startswith("AETHER_")}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env={**base, "AETHER_REDIS_URL": "redis://127.0.0.1:1/0", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_both_planes_refuse_to_start_with_a_bad_pair_in_one_line(
    tmp_path: Path, certificate: ServerTls
) -> None:
    cert, key, _ = _bad_pairs(tmp_path, certificate)["mismatched"]
    env = {"AETHER_HOME": str(tmp_path / "home"), "AETHER_TLS_CERT": str(cert), "AETHER_TLS_KEY": str(key)}
    for module in ("control_plane", "data_plane"):
        result = _run(module, env, "--listen", "127.0.0.1:0")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert lines[0].startswith(
            f"python -m {module}: error: AETHER_TLS_CERT {cert} and AETHER_TLS_KEY {key}"
        )


def test_a_missing_or_garbage_ca_is_refused_by_the_data_plane_and_aetherctl(tmp_path: Path) -> None:
    """The data plane said it was listening and retried its watch forever, a traceback each time;
    aetherctl printed a traceback."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    missing = tmp_path / "nope" / "ca.pem"
    with pytest.raises(ValueError, match=f"AETHER_TLS_CA: cannot read {missing}"):
        ChannelSecurity.from_env({"AETHER_TLS_CA": str(missing)})
    with pytest.raises(ValueError, match=f"AETHER_TLS_CA: {garbage} holds no PEM certificate"):
        ChannelSecurity.from_env({"AETHER_TLS_CA": str(garbage)})
    with pytest.raises(ValueError, match="AETHER_TOKEN_FILE: cannot read"):
        ChannelSecurity.from_env({"AETHER_TOKEN_FILE": str(missing)})
    env = {"AETHER_HOME": str(tmp_path / "home"), "AETHER_TLS_CA": str(missing)}
    plane = _run("data_plane", env, "--listen", "127.0.0.1:0", "--control-plane", "127.0.0.1:1")
    assert plane.returncode == 2 and "listening" not in plane.stdout
    assert plane.stderr.strip().splitlines() == [
        f"python -m data_plane: error: AETHER_TLS_CA: cannot read {missing}: No such file or directory"
    ]
    cli = _run("control_plane.cli.main", env, "--control-plane", "127.0.0.1:1", "features", "list")
    assert cli.returncode == 2
    assert cli.stderr.strip().splitlines() == [
        f"error: AETHER_TLS_CA: cannot read {missing}: No such file or directory"
    ]
