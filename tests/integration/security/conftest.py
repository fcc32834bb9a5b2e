"""Servers for the auth and TLS tests: a grpc.aio server with the auth interceptor in front of the real
feature-registry, audit and health services (on a fresh database of every backend), and self-signed
certificates for 127.0.0.1/localhost made with the ``openssl`` command."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc.aio
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from clients.aether.v1 import audit_pb2_grpc, feature_registry_pb2_grpc
from clients.tls import ServerTls, add_port
from control_plane.api.audit import AuditServicer
from control_plane.api.auth import TokenGrant
from control_plane.api.feature_registry import FeatureRegistryServicer
from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head
from control_plane.features.registry import FeatureRegistry

ADMIN_TOKEN = "admin-secret-0123456789"
READONLY_TOKEN = "reader-secret-9876543210"
GRANTS = (
    TokenGrant("admin", ADMIN_TOKEN, can_write=True),
    TokenGrant("readonly", READONLY_TOKEN, can_write=False),
)


def make_certificate(folder: Path, name: str = "server") -> ServerTls:
    """A self-signed certificate (its own CA) valid for localhost and 127.0.0.1, and its key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError(
            "the openssl command is needed to generate test certificates: apt-get install openssl"
        )
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return ServerTls(cert, key)


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> ServerTls:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@dataclass
class SecuredServer:
    address: str
    db_url: str


async def serve(
    db_url: str,
    interceptors: Sequence[grpc.aio.ServerInterceptor],
    tls: ServerTls | None,
    extra_handlers: Sequence[grpc.GenericRpcHandler] = (),
) -> AsyncIterator[SecuredServer]:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    sessions = create_session_factory(engine)
    server = grpc.aio.server(interceptors=list(interceptors))
    registry_servicer = FeatureRegistryServicer(FeatureRegistry(sessions), watch_poll_interval_s=0.1)
    feature_registry_pb2_grpc.add_FeatureRegistryServicer_to_server(registry_servicer, server)  # type: ignore[no-untyped-call]
    audit_pb2_grpc.add_AuditServicer_to_server(AuditServicer(sessions), server)  # type: ignore[no-untyped-call]
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    if extra_handlers:
        server.add_generic_rpc_handlers(tuple(extra_handlers))
    port = add_port(server, "127.0.0.1:0", tls)
    await server.start()
    try:
        yield SecuredServer(f"127.0.0.1:{port}", db_url)
    finally:
        registry_servicer.close()
        await server.stop(0.2)
        engine.dispose()
