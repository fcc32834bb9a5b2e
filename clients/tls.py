"""TLS for both planes, by configuration: a server with ``AETHER_TLS_CERT`` and ``AETHER_TLS_KEY`` (PEM
paths) listens with TLS only; a client with ``AETHER_TLS_CA`` (the PEM of the certificate, or of the
authority that signed it) dials with TLS and checks the server's certificate against it."""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from clients.env_values import ConfigurationError


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the TLS {what} {path}: {exc}") from exc


def server_credentials(cert_path: Path | str, key_path: Path | str) -> grpc.ServerCredentials:
    """Credentials for ``server.add_secure_port``: the server's certificate chain and private key."""
    pair = (_read(Path(key_path), "private key"), _read(Path(cert_path), "certificate"))
    return grpc.ssl_server_credentials([pair])


def check_ca(ca_path: Path, variable: str = "AETHER_TLS_CA") -> None:
    """ConfigurationError naming ``variable`` unless ``ca_path`` holds PEM certificates."""
    try:
        ca_path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{variable}: cannot read {ca_path}: {exc.strerror or exc}") from None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(ca_path))
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigurationError(
            f"{variable}: {ca_path} holds no PEM certificate ({getattr(exc, 'reason', None) or exc})"
        ) from None


def channel_credentials(ca_path: Path | str) -> grpc.ChannelCredentials:
    """Credentials for ``grpc.secure_channel``: trust the certificates in ``ca_path`` (PEM)."""
    return grpc.ssl_channel_credentials(root_certificates=_read(Path(ca_path), "CA certificate"))


@dataclass(frozen=True)
class ServerTls:
    cert_path: Path
    key_path: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerTls | None:
        """The pair from ``AETHER_TLS_CERT`` and ``AETHER_TLS_KEY``; None when neither is set, ValueError
        when only one is."""
        env = os.environ if environ is None else environ
        cert, key = env.get("AETHER_TLS_CERT") or None, env.get("AETHER_TLS_KEY") or None
        if cert is None and key is None:
            return None
        if cert is None or key is None:
            raise ConfigurationError("set both AETHER_TLS_CERT and AETHER_TLS_KEY (or neither)")
        tls = cls(Path(cert).expanduser(), Path(key).expanduser())
        tls.check()
        return tls

    def check(self) -> None:
        """ConfigurationError unless the files are a PEM certificate and its private key. gRPC takes any
        bytes and fails only when it binds, with "Failed to bind to address" and a traceback that names
        neither file nor the real problem (a swapped or mismatched pair, a file that is not PEM)."""
        for variable, path in (("AETHER_TLS_CERT", self.cert_path), ("AETHER_TLS_KEY", self.key_path)):
            try:
                path.read_bytes()
            except OSError as exc:
                raise ConfigurationError(f"{variable}: cannot read {path}: {exc.strerror or exc}") from None
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.cert_path, self.key_path)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigurationError(
                f"AETHER_TLS_CERT {self.cert_path} and AETHER_TLS_KEY {self.key_path} are not a PEM"
                f" certificate and its private key ({getattr(exc, 'reason', None) or exc}): check that"
                " neither file is swapped, truncated or from another pair"
            ) from None

    def credentials(self) -> grpc.ServerCredentials:
        return server_credentials(self.cert_path, self.key_path)


def add_port(server: grpc.Server, address: str, tls: ServerTls | None) -> int:
    """Listens on ``address`` with TLS when ``tls`` is given, in plaintext otherwise; returns the port
    (the real one for port 0). Works for sync and grpc.aio servers alike."""
    port: int
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, tls.credentials())
    return port
