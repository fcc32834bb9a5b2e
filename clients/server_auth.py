"""The server side of bearer-token auth, shared by both planes (the client side is
:mod:`clients.sdk.auth`).

Tokens are configured the same way for the control plane and the data plane: ``AETHER_ADMIN_TOKEN`` (or
``AETHER_ADMIN_TOKEN_FILE`` naming a file that holds it) turns auth on; ``AETHER_READONLY_TOKEN`` /
``_FILE`` adds a token that may only read (:class:`ServerTokens`). A caller presents one as
``authorization: Bearer <token>`` metadata (what ``AETHER_TOKEN`` makes the SDK send). A missing or
unknown token is UNAUTHENTICATED with the messages :data:`MISSING_TOKEN` / :data:`INVALID_TOKEN`.

Tokens are compared in constant time (``hmac.compare_digest``) against every configured token, so the
time taken says nothing about how much of a guess was right (:class:`TokenCheck`).

:class:`TokenInterceptor` is the whole check for a server whose every API only reads (the data plane):
any configured token admits the call. The control plane tells reads from writes and records who called;
its interceptor (``control_plane.api.auth``) builds on the same pieces."""

from __future__ import annotations

import hmac
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import grpc
import grpc.aio

from clients.env_values import ConfigurationError, sendable_token
from clients.errors import abort

ADMIN_PRINCIPAL = "admin"
READONLY_PRINCIPAL = "readonly"
HEALTH_SERVICE = "grpc.health.v1.Health"
#: Server reflection (both protocol versions): it describes the services, it serves no data.
REFLECTION_SERVICES = frozenset(
    {"grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}
)
MISSING_TOKEN = "missing `authorization: Bearer <token>` metadata"
INVALID_TOKEN = "invalid bearer token"
_BEARER = "bearer "


@dataclass(frozen=True)
class TokenGrant:
    """One accepted bearer token: who presents it, and whether it may call mutating RPCs."""

    principal: str
    token: str
    can_write: bool

    def __repr__(self) -> str:  # never print the secret
        return f"TokenGrant(principal={self.principal!r}, can_write={self.can_write})"


@dataclass(frozen=True)
class ServerTokens:
    """The tokens a server accepts; none configured = auth off."""

    admin_token: str | None = field(default=None, repr=False)  # never printed
    readonly_token: str | None = field(default=None, repr=False)

    @property
    def enabled(self) -> bool:
        return self.admin_token is not None

    def grants(self) -> list[TokenGrant]:
        grants = []
        if self.admin_token is not None:
            grants.append(TokenGrant(ADMIN_PRINCIPAL, self.admin_token, can_write=True))
        if self.readonly_token is not None:
            grants.append(TokenGrant(READONLY_PRINCIPAL, self.readonly_token, can_write=False))
        return grants

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Tokens from ``AETHER_ADMIN_TOKEN`` / ``AETHER_ADMIN_TOKEN_FILE`` and ``AETHER_READONLY_TOKEN`` /
        ``AETHER_READONLY_TOKEN_FILE`` (a file holds the token alone; surrounding whitespace is dropped).
        ConfigurationError (a ValueError) for a configuration that cannot be meant: both the variable and
        its file, an empty token, a read-only token without an admin token (nothing could ever write), or
        one token for both roles."""
        env = os.environ if environ is None else environ
        admin = _token(env, "AETHER_ADMIN_TOKEN")
        readonly = _token(env, "AETHER_READONLY_TOKEN")
        if readonly is not None and admin is None:
            raise ConfigurationError(
                "AETHER_READONLY_TOKEN is set without AETHER_ADMIN_TOKEN: no call could ever write"
            )
        if (
            readonly is not None
            and admin is not None
            and hmac.compare_digest(readonly.encode(), admin.encode())
        ):
            raise ConfigurationError(
                "AETHER_READONLY_TOKEN equals AETHER_ADMIN_TOKEN: use two different tokens"
            )
        return cls(admin_token=admin, readonly_token=readonly)


def _token(env: Mapping[str, str], name: str) -> str | None:
    """The token of ``name`` (an empty variable counts as unset), read by the rule the SDK reads
    ``AETHER_TOKEN`` with (:func:`clients.env_values.sendable_token`), so that a token file saved with a
    byte order mark holds the same token on both sides, and a token no client can send (not printable
    ASCII on one line) is refused here rather than locking every caller out. A value of only whitespace
    is refused: stripped, it would be the empty token, which a caller sending ``Bearer `` would match (a
    template that renders a missing secret as a newline must not hand out admin rights)."""
    value, path = env.get(name) or None, env.get(f"{name}_FILE") or None
    if value is not None and path is not None:
        raise ConfigurationError(f"set {name} or {name}_FILE, not both")
    if path is not None:
        try:
            text = Path(path).expanduser().read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"cannot read {name}_FILE {path}: {exc}") from exc
        token = sendable_token(text, f"{name}_FILE {path}")
        if not token:
            raise ConfigurationError(f"{name}_FILE {path} is empty")
        return token
    if value is None:
        return None
    token = sendable_token(value, name)
    if not token:
        raise ConfigurationError(f"{name} holds only whitespace: set a token, or unset it to turn auth off")
    return token


def bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The token of an ``authorization: Bearer <token>`` header, if any."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value[: len(_BEARER)].lower() == _BEARER:
            return value[len(_BEARER) :].strip()
    return None


class TokenCheck:
    """Which grant, if any, a presented token is: compared in constant time against every grant."""

    def __init__(self, grants: Sequence[TokenGrant]) -> None:
        if not grants:
            raise ValueError("an auth check needs at least one token")
        if any(not grant.token for grant in grants):
            raise ValueError("an empty token would admit any caller that sends `Bearer `")
        self._grants = [(grant, grant.token.encode("utf-8")) for grant in grants]

    def match(self, token: str | None) -> TokenGrant | None:
        if not token:
            return None
        presented = token.encode("utf-8")
        match: TokenGrant | None = None
        for grant, expected in self._grants:  # no early exit: every token is compared
            if hmac.compare_digest(presented, expected):
                match = grant
        return match

    def check(self, token: str | None) -> tuple[TokenGrant | None, str]:
        """(the grant, "") for a valid token, else (None, why the caller is UNAUTHENTICATED)."""
        if not token:
            return None, MISSING_TOKEN
        grant = self.match(token)
        return (grant, "") if grant is not None else (None, INVALID_TOKEN)


class TokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc.aio is untyped
    """Every call outside ``open_services`` needs one of ``grants``' tokens, whichever: for a server whose
    APIs only read. An admitted call gets its handler untouched (the raw-bytes handlers of
    ``data_plane.api.registration`` keep their codecs, and the call pays no wrapper); a refused one a
    handler that answers UNAUTHENTICATED without reading the request; ``on_refused`` (the full method
    name, the status) is told of it first, for the server's own counts."""

    def __init__(
        self,
        grants: Sequence[TokenGrant],
        open_services: frozenset[str],
        on_refused: Callable[[str, grpc.StatusCode], None] | None = None,
    ) -> None:
        self._tokens = TokenCheck(grants)
        self._open_services = open_services
        self._on_refused = on_refused

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: let gRPC answer UNIMPLEMENTED
            return handler
        grant, message = self._tokens.check(bearer_token(handler_call_details.invocation_metadata))
        if grant is not None:
            return handler
        # Looked at only for a call without a valid token: an admitted call skips the method-name split.
        if handler_call_details.method.lstrip("/").rpartition("/")[0] in self._open_services:
            return handler
        if self._on_refused is not None:
            self._on_refused(handler_call_details.method, grpc.StatusCode.UNAUTHENTICATED)
        return rejecting_handler(handler, grpc.StatusCode.UNAUTHENTICATED, message)


#: Told of a refused call before the caller is: (request message or None for a streamed request, actor,
#: status, message, peer as gRPC names it). It must not raise.
OnRefusal = Callable[[Any, str, grpc.StatusCode, str, str], Awaitable[None]]


def rejecting_handler(
    handler: Any,
    code: grpc.StatusCode,
    message: str,
    on_refusal: OnRefusal | None = None,
    actor: str = "",
) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that fails every call with ``code``, telling
    ``on_refusal`` first (the request, or None when the client streams it: it is not read)."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if on_refusal is not None:
            request_read = None if handler.request_streaming else request
            await on_refusal(request_read, actor, code, message, context.peer())
        await abort(context, code, message)

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await refuse(request, context)

    async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        await refuse(request, context)
        yield  # pragma: no cover  (makes this an async generator; abort always raises)

    return rebuilt_handler(handler, unary, stream)


def handler_behavior(handler: Any) -> Any:
    """The function behind ``handler``, whichever of the four call shapes it has."""
    if handler.request_streaming:
        return handler.stream_stream if handler.response_streaming else handler.stream_unary
    return handler.unary_stream if handler.response_streaming else handler.unary_unary


def rebuilt_handler(handler: Any, unary: Any, stream: Any) -> grpc.RpcMethodHandler:
    """A handler of ``handler``'s shape and codecs running ``unary`` (a unary response) or ``stream``."""
    codecs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(stream, **codecs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, **codecs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(stream, **codecs)
    return grpc.unary_unary_rpc_method_handler(unary, **codecs)
