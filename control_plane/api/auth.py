"""Bearer-token auth for the control plane's gRPC services: a grpc.aio server interceptor.

Auth is on when an admin token is configured (``AETHER_ADMIN_TOKEN``, or ``AETHER_ADMIN_TOKEN_FILE``
naming a file that holds it); a read-only token (``AETHER_READONLY_TOKEN`` / ``_FILE``) may be added.
With auth on, every RPC needs ``authorization: Bearer <token>`` metadata:

* a missing or unknown token → UNAUTHENTICATED, on reads as on writes (reads expose the registry, the
  audit log and the lineage, so they are not public either);
* the read-only token on a mutating RPC → PERMISSION_DENIED;
* the health service (``grpc.health.v1.Health``) stays open, so load balancers and readiness probes need
  no secret.

Which RPCs mutate comes from the method-name convention all ``aether.v1`` services follow: a method
whose name starts with one of :data:`READ_PREFIXES` (Get, List, Watch, Compare, Find, Query, Verify,
Export, Download, Stat, Check, Search, Logs) as a whole word (``GetRun``, ``Download``; not ``Getaway``) only
reads; every other method (Create, Update, Delete, Apply, Log, Upload, Review, Set ...) writes. Erring
this way round means a new read method that breaks the convention asks for the admin token, never that a
new write method slips through with a read-only one.
Server reflection counts as a read.

A read method whose request can ask for a side effect is listed in :data:`WRITING_REQUEST_FIELDS` with the
fields that do it (``GetHistoricalFeatures`` with ``output_path`` writes a Parquet file on the server). For
such a method the read-only token's call is let through only while its request messages leave those fields
empty: each message is checked as the servicer takes it, before anything acts on it, and one that sets a
field ends the call with PERMISSION_DENIED naming the field. The name alone cannot decide, and the
servicer must not have to remember: the rule sits here, beside the prefixes.

Tokens are compared in constant time (``hmac.compare_digest``) against every configured token, so the
time taken says nothing about how much of a guess was right. The accepted token's principal becomes the
call's actor for the audit log (see :mod:`control_plane.api.identity`).

A refused call is handed to the ``on_refusal`` hook, if any, before the caller is told: the control plane
passes :meth:`control_plane.api.refusals.RefusalAudit.refused`, which audits refused model operations
(actor: the principal of a token without the right, or "unauthenticated")."""

from __future__ import annotations

import functools
import hmac
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import grpc
import grpc.aio

from clients.env_values import sendable_token
from control_plane.api.identity import PRINCIPAL

READ_PREFIXES = (
    "Get",
    "List",
    "Watch",
    "Compare",
    "Find",
    "Query",
    "Verify",
    "Export",
    "Download",
    "Stat",
    "Check",
    "Search",
    "Logs",  # Jobs/Logs streams a job's output; "Log..." methods (LogBatch, LogArtifact) still write
)
#: Read methods (by name) that write when a request sets one of these fields: see the module docstring.
#: A new read method with a side-effect field belongs here (a unit test checks each entry names a real
#: method and request field).
WRITING_REQUEST_FIELDS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"/aether.v1.OfflineFeatures/GetHistoricalFeatures": ("output_path",)}
)
#: Services every caller may use without a token.
OPEN_SERVICES = frozenset({"grpc.health.v1.Health"})
ADMIN_PRINCIPAL = "admin"
READONLY_PRINCIPAL = "readonly"
_BEARER = "bearer "
#: The actor of a call refused for a missing or unknown token (see ``on_refusal``).
UNAUTHENTICATED_ACTOR = "unauthenticated"
#: Told of each refused call: (full method, request message or None for a streamed request, actor,
#: status, message, peer as gRPC names it). It must not raise.
RefusalHook = Callable[[str, Any, str, grpc.StatusCode, str, str], Awaitable[None]]


def is_read_method(full_method: str) -> bool:
    """Whether ``/package.Service/Method`` only reads, by the naming convention above."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    if (
        service == "grpc.reflection.v1alpha.ServerReflection"
        or service == "grpc.reflection.v1.ServerReflection"
    ):
        return True
    # A whole word: "GetRun" and "Download" read, "Getaway" does not.
    return any(
        method.startswith(prefix) and (len(method) == len(prefix) or method[len(prefix)].isupper())
        for prefix in READ_PREFIXES
    )


@dataclass(frozen=True)
class TokenGrant:
    """One accepted bearer token: who presents it, and whether it may call mutating RPCs."""

    principal: str
    token: str
    can_write: bool

    def __repr__(self) -> str:  # never print the secret
        return f"TokenGrant(principal={self.principal!r}, can_write={self.can_write})"


@dataclass(frozen=True)
class AuthSettings:
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

    def interceptors(self, on_refusal: RefusalHook | None = None) -> list[grpc.aio.ServerInterceptor]:
        """What to pass to ``grpc.aio.server(interceptors=...)``: nothing when auth is off."""
        return [AuthInterceptor(self.grants(), on_refusal=on_refusal)] if self.enabled else []

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AuthSettings:
        """Tokens from ``AETHER_ADMIN_TOKEN`` / ``AETHER_ADMIN_TOKEN_FILE`` and ``AETHER_READONLY_TOKEN`` /
        ``AETHER_READONLY_TOKEN_FILE`` (a file holds the token alone; surrounding whitespace is dropped).
        ValueError for a configuration that cannot be meant: both the variable and its file, an empty
        token, a read-only token without an admin token (nothing could ever write), or one token for
        both roles."""
        env = os.environ if environ is None else environ
        admin = _token(env, "AETHER_ADMIN_TOKEN")
        readonly = _token(env, "AETHER_READONLY_TOKEN")
        if readonly is not None and admin is None:
            raise ValueError(
                "AETHER_READONLY_TOKEN is set without AETHER_ADMIN_TOKEN: no call could ever write"
            )
        if (
            readonly is not None
            and admin is not None
            and hmac.compare_digest(readonly.encode(), admin.encode())
        ):
            raise ValueError("AETHER_READONLY_TOKEN equals AETHER_ADMIN_TOKEN: use two different tokens")
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
        raise ValueError(f"set {name} or {name}_FILE, not both")
    if path is not None:
        try:
            text = Path(path).expanduser().read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read {name}_FILE {path}: {exc}") from exc
        token = sendable_token(text, f"{name}_FILE {path}")
        if not token:
            raise ValueError(f"{name}_FILE {path} is empty")
        return token
    if value is None:
        return None
    token = sendable_token(value, name)
    if not token:
        raise ValueError(f"{name} holds only whitespace: set a token, or unset it to turn auth off")
    return token


def bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The token of an ``authorization: Bearer <token>`` header, if any."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value[: len(_BEARER)].lower() == _BEARER:
            return value[len(_BEARER) :].strip()
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc.aio is untyped
    """Checks the bearer token of every RPC against ``grants`` (see the module docstring)."""

    def __init__(
        self,
        grants: Sequence[TokenGrant],
        open_services: frozenset[str] = OPEN_SERVICES,
        on_refusal: RefusalHook | None = None,
    ) -> None:
        if not grants:
            raise ValueError("an AuthInterceptor needs at least one token")
        if any(not grant.token for grant in grants):
            raise ValueError("an empty token would admit any caller that sends `Bearer `")
        self._grants = [(grant, grant.token.encode("utf-8")) for grant in grants]
        self._open_services = open_services
        self._on_refusal = on_refusal

    def authorize(
        self, full_method: str, token: str | None
    ) -> tuple[str | None, grpc.StatusCode | None, str]:
        """(principal, None, "") when the call may proceed, else (principal, status, message): the
        principal of a token refused for want of the right to write, None without a valid token."""
        if full_method.lstrip("/").rpartition("/")[0] in self._open_services:
            return None, None, ""
        if not token:
            return None, grpc.StatusCode.UNAUTHENTICATED, "missing `authorization: Bearer <token>` metadata"
        presented = token.encode("utf-8")
        match: TokenGrant | None = None
        for grant, expected in self._grants:  # no early exit: every token is compared
            if hmac.compare_digest(presented, expected):
                match = grant
        if match is None:
            return None, grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token"
        if not match.can_write and not is_read_method(full_method):
            return (
                match.principal,
                grpc.StatusCode.PERMISSION_DENIED,
                f"the {match.principal} token may not call {full_method}: it changes state",
            )
        return match.principal, None, ""

    def guarded_fields(self, full_method: str, token: str | None) -> tuple[str, ...]:
        """The request fields ``token``'s caller may not set on ``full_method`` (a read that writes when
        they are set, called without the right to write); empty when nothing needs checking."""
        fields = WRITING_REQUEST_FIELDS.get("/" + full_method.lstrip("/"), ())
        if not fields or not token:
            return ()
        presented = token.encode("utf-8")
        can_write = False
        for grant, expected in self._grants:  # no early exit, as in authorize
            if hmac.compare_digest(presented, expected):
                can_write = grant.can_write
        return () if can_write else fields

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        token = bearer_token(handler_call_details.invocation_metadata)
        principal, code, message = self.authorize(method, token)
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: let gRPC answer UNIMPLEMENTED
            return handler
        if code is not None:
            actor = principal or UNAUTHENTICATED_ACTOR
            refused = None if self._on_refusal is None else functools.partial(self._on_refusal, method)
            return _rejecting(handler, code, message, refused, actor)
        if principal is None:
            return handler
        return _as_principal(handler, principal, method, self.guarded_fields(method, token))


def _rejecting(
    handler: Any,
    code: grpc.StatusCode,
    message: str,
    on_refusal: Callable[[Any, str, grpc.StatusCode, str, str], Awaitable[None]] | None = None,
    actor: str = UNAUTHENTICATED_ACTOR,
) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that fails every call with ``code``, telling
    ``on_refusal`` first (the request, or None when the client streams it: it is not read)."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if on_refusal is not None:
            request_read = None if handler.request_streaming else request
            await on_refusal(request_read, actor, code, message, context.peer())
        await context.abort(code, message)

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await refuse(request, context)

    async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        await refuse(request, context)
        yield  # pragma: no cover  (makes this an async generator; abort always raises)

    return _rebuilt(handler, unary, stream)


def _as_principal(
    handler: Any, principal: str, method: str = "", guarded: tuple[str, ...] = ()
) -> grpc.RpcMethodHandler:
    """``handler`` with :data:`PRINCIPAL` set for the duration of each call; with ``guarded`` fields,
    every request message is checked for them first (:func:`_refusal`)."""
    original = _behavior(handler)

    async def checked(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if not guarded:
            return request
        if not handler.request_streaming:
            await _check_message(request, context, principal, method, guarded)
            return request

        async def messages() -> AsyncIterator[Any]:
            # Checked as the servicer pulls each one: a later message could set the field too.
            async for message in request:
                await _check_message(message, context, principal, method, guarded)
                yield message

        return messages()

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        PRINCIPAL.set(principal)  # the call runs in its own task: the value ends with it
        return await original(await checked(request, context), context)

    async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        PRINCIPAL.set(principal)
        async for response in original(await checked(request, context), context):
            yield response

    return _rebuilt(handler, unary, stream)


async def _check_message(
    message: Any,
    context: grpc.aio.ServicerContext[Any, Any],
    principal: str,
    method: str,
    guarded: tuple[str, ...],
) -> None:
    """Aborts the call (PERMISSION_DENIED) when ``message`` sets one of the ``guarded`` fields."""
    for name in guarded:
        if getattr(message, name, None):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"the {principal} token may not set {name} on {method}: it writes on the server",
            )


def _behavior(handler: Any) -> Any:
    if handler.request_streaming:
        return handler.stream_stream if handler.response_streaming else handler.stream_unary
    return handler.unary_stream if handler.response_streaming else handler.unary_unary


def _rebuilt(handler: Any, unary: Any, stream: Any) -> grpc.RpcMethodHandler:
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
