"""How SDK clients and ``aetherctl`` reach a control plane that has auth and TLS on.

``AETHER_TOKEN`` (or ``AETHER_TOKEN_FILE``) is sent on every call as ``authorization: Bearer <token>``;
``AETHER_TLS_CA`` switches the channel to TLS, trusting that PEM. ``AETHER_TLS_SERVER_NAME`` overrides
the host name checked against the certificate (for a certificate issued to a name other than the one
dialled). The token travels through a client interceptor rather than call credentials, because gRPC
refuses call credentials on plaintext channels and a loopback deployment may have a token without TLS
(the token then crosses the network in the clear: use TLS off the loopback)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import grpc.aio

from clients.env_values import ConfigurationError, sendable_token
from clients.loopback import proxy_options
from clients.tls import channel_credentials, check_ca


@dataclass(frozen=True)
class ChannelSecurity:
    token: str | None = None
    ca_path: Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        # Built directly, a token with a line break or a non-ASCII character was taken as it was and then
        # failed every call with INTERNAL "Invalid metadata"; from_env's check applies to every token.
        if self.token is not None:
            object.__setattr__(self, "token", sendable_token(self.token, "ChannelSecurity token") or None)

    def __repr__(self) -> str:  # never print the secret
        token = "set" if self.token else None
        return f"ChannelSecurity(token={token}, ca_path={self.ca_path!r}, server_name={self.server_name!r})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ChannelSecurity:
        """From ``AETHER_TOKEN`` / ``AETHER_TOKEN_FILE``, ``AETHER_TLS_CA`` and ``AETHER_TLS_SERVER_NAME``
        (empty = unset). The files are read here: a missing or unreadable one, a CA file without a PEM
        certificate, or a token a gRPC header cannot carry (:func:`clients.env_values.sendable_token`; a
        leading byte order mark is dropped), is a ConfigurationError naming the variable, not a failure on
        every later call (a data plane retried its watch forever, with a traceback each time)."""
        env = os.environ if environ is None else environ
        token, token_file = env.get("AETHER_TOKEN") or None, env.get("AETHER_TOKEN_FILE") or None
        if token is not None:
            token = sendable_token(token, "AETHER_TOKEN") or None
        elif token_file is not None:
            try:
                text = Path(token_file).expanduser().read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise ConfigurationError(f"AETHER_TOKEN_FILE: cannot read {token_file}: {reason}") from None
            token = sendable_token(text, f"AETHER_TOKEN_FILE {token_file}") or None
        ca = env.get("AETHER_TLS_CA") or None
        ca_path = Path(ca).expanduser() if ca else None
        if ca_path is not None:
            check_ca(ca_path)
        return cls(
            token=token,
            ca_path=ca_path,
            server_name=env.get("AETHER_TLS_SERVER_NAME") or None,
        )

    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")] if self.token else []

    def options(self) -> list[tuple[str, Any]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def open_channel(
    target: str, security: ChannelSecurity | None = None, options: list[tuple[str, Any]] | None = None
) -> grpc.Channel:
    """A synchronous channel to ``target`` honouring ``security`` (default: from the environment); one to
    this host bypasses an HTTP proxy (:mod:`clients.loopback`)."""
    security = ChannelSecurity.from_env() if security is None else security
    all_options = [*(options or []), *security.options(), *proxy_options(target)]
    if security.ca_path is not None:
        channel = grpc.secure_channel(target, channel_credentials(security.ca_path), options=all_options)
    else:
        channel = grpc.insecure_channel(target, options=all_options)
    if not security.token:
        return channel
    return grpc.intercept_channel(channel, _SyncBearer(security.metadata()))


def open_aio_channel(
    target: str, security: ChannelSecurity | None = None, options: list[tuple[str, Any]] | None = None
) -> grpc.aio.Channel:
    """The grpc.aio counterpart of :func:`open_channel`."""
    security = ChannelSecurity.from_env() if security is None else security
    all_options = [*(options or []), *security.options(), *proxy_options(target)]
    interceptors = _aio_bearer(security.metadata()) if security.token else None
    if security.ca_path is not None:
        return grpc.aio.secure_channel(
            target, channel_credentials(security.ca_path), options=all_options, interceptors=interceptors
        )
    return grpc.aio.insecure_channel(target, options=all_options, interceptors=interceptors)


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


def _with_metadata(details: Any, extra: list[tuple[str, str]]) -> _CallDetails:
    metadata = [*(details.metadata or ()), *extra]
    return _CallDetails(
        details.method,
        details.timeout,
        metadata,
        details.credentials,
        getattr(details, "wait_for_ready", None),
        getattr(details, "compression", None),
    )


class _SyncBearer(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]  # untyped in grpc
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]  # untyped in grpc
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]  # untyped in grpc
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self._metadata = metadata

    def _call(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(_with_metadata(details, self._metadata), request)

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return self._call(continuation, client_call_details, request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return self._call(continuation, client_call_details, request)

    def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return self._call(continuation, client_call_details, request_iterator)

    def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return self._call(continuation, client_call_details, request_iterator)


def _aio_bearer(metadata: list[tuple[str, str]]) -> list[grpc.aio.ClientInterceptor]:
    """One interceptor per call shape: grpc.aio dispatches on the interceptor's base class."""

    def details_with_token(details: Any) -> Any:
        merged = grpc.aio.Metadata(*(tuple(details.metadata or ())), *metadata)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, merged, details.credentials, details.wait_for_ready
        )

    class UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
        async def intercept_unary_unary(
            self, continuation: Any, client_call_details: Any, request: Any
        ) -> Any:
            return await continuation(details_with_token(client_call_details), request)

    class UnaryStream(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
        async def intercept_unary_stream(
            self, continuation: Any, client_call_details: Any, request: Any
        ) -> Any:
            return await continuation(details_with_token(client_call_details), request)

    class StreamUnary(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
        async def intercept_stream_unary(
            self, continuation: Any, client_call_details: Any, request_iterator: Any
        ) -> Any:
            return await continuation(details_with_token(client_call_details), request_iterator)

    class StreamStream(grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
        async def intercept_stream_stream(
            self, continuation: Any, client_call_details: Any, request_iterator: Any
        ) -> Any:
            return await continuation(details_with_token(client_call_details), request_iterator)

    return [UnaryUnary(), UnaryStream(), StreamUnary(), StreamStream()]
