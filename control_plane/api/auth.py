"""Bearer-token auth for the control plane's gRPC services: a grpc.aio server interceptor.

Auth is on when an admin token is configured (``AETHER_ADMIN_TOKEN``, or ``AETHER_ADMIN_TOKEN_FILE``
naming a file that holds it); a read-only token (``AETHER_READONLY_TOKEN`` / ``_FILE``) may be added.
With auth on, every RPC needs ``authorization: Bearer <token>`` metadata:

* a missing or unknown token → UNAUTHENTICATED, on reads as on writes (reads expose the registry, the
  audit log and the lineage, so they are not public either);
* the read-only token on a mutating RPC → PERMISSION_DENIED, and on a read in :data:`WRITERS_ONLY_READS`
  (``Jobs/Logs``: what a job printed may be any secret the job could read);
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
servicer must not have to remember: the rule sits here, beside the prefixes. A read's side effect that no
field asks for (``GetHistoricalFeatures`` records each training set's lineage in the offline store) is
left out by the servicer when :data:`~control_plane.api.identity.MAY_WRITE`, set here for every call,
says the caller may not write.

A job's own token (:mod:`control_plane.api.job_tokens`, principal ``job:<id>``) is checked here too:
it reads like the read-only token, and of the writes may call only :data:`JOB_WRITES`, each request
message naming the job's run and no other (PERMISSION_DENIED otherwise, as for a guarded field).

Tokens are configured, read and compared by :mod:`clients.server_auth`, which the data plane shares (its
APIs only read, so any configured token admits a call there): constant time, against every configured
token. The accepted token's principal becomes the call's actor for the audit log (see
:mod:`control_plane.api.identity`). What is the control plane's own lives here: which methods write, the
reads that write when a field is set, the principal of the call, and the refusal hook.

A refused call is handed to the ``on_refusal`` hook, if any, before the caller is told (a call refused
whole, and a request message a check refuses: a guarded field, a job token naming another run): the
control plane passes :meth:`control_plane.api.refusals.RefusalAudit.refused`, which audits refused model
operations and a job token's refused writes (actor: the principal of a token without the right, or
"unauthenticated")."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import grpc
import grpc.aio

from clients.errors import abort
from clients.server_auth import (
    ADMIN_PRINCIPAL,
    HEALTH_SERVICE,
    READONLY_PRINCIPAL,
    REFLECTION_SERVICES,
    OnRefusal,
    ServerTokens,
    TokenCheck,
    TokenGrant,
    bearer_token,
    handler_behavior,
    rebuilt_handler,
    rejecting_handler,
)
from control_plane.api.identity import JOB_PRINCIPAL_PREFIX, JOB_RUN, MAY_WRITE, PRINCIPAL
from control_plane.api.job_tokens import JOB_WRITES, JobScope, JobTokens, job_run_refusal

__all__ = [
    "ADMIN_PRINCIPAL",
    "OPEN_SERVICES",
    "READONLY_PRINCIPAL",
    "READ_PREFIXES",
    "UNAUTHENTICATED_ACTOR",
    "WRITERS_ONLY_READS",
    "WRITING_REQUEST_FIELDS",
    "AuthInterceptor",
    "AuthSettings",
    "RefusalHook",
    "TokenGrant",
    "bearer_token",
    "is_read_method",
]

_log = logging.getLogger("aether.auth")

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
#: Read methods only a caller that may write gets: they return what a job chose to print (its log),
#: which may be anything the job could read, its own ``spec.env`` secrets among them (redacted from
#: every other read of a caller without the right to write). A read-only or job token is PERMISSION_DENIED.
WRITERS_ONLY_READS = frozenset({"/aether.v1.Jobs/Logs"})
#: Services every caller may use without a token (reflection needs one here: it counts as a read).
OPEN_SERVICES = frozenset({HEALTH_SERVICE})
#: The actor of a call refused for a missing or unknown token (see ``on_refusal``).
UNAUTHENTICATED_ACTOR = "unauthenticated"
#: Checks one request message: why it is refused (PERMISSION_DENIED), or None.
MessageCheck = Callable[[Any], str | None]
#: Told of each refused call: (full method, request message or None for a streamed request, actor,
#: status, message, peer as gRPC names it). It must not raise.
RefusalHook = Callable[[str, Any, str, grpc.StatusCode, str, str], Awaitable[None]]


def is_read_method(full_method: str) -> bool:
    """Whether ``/package.Service/Method`` only reads, by the naming convention above."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    if service in REFLECTION_SERVICES:
        return True
    # A whole word: "GetRun" and "Download" read, "Getaway" does not.
    return any(
        method.startswith(prefix) and (len(method) == len(prefix) or method[len(prefix)].isupper())
        for prefix in READ_PREFIXES
    )


class AuthSettings(ServerTokens):
    """The control plane's tokens (:class:`clients.server_auth.ServerTokens`) and its interceptor."""

    def job_tokens(self) -> JobTokens | None:
        """The job tokens (:mod:`control_plane.api.job_tokens`) minted and accepted: None when auth is off."""
        return JobTokens(self.admin_token) if self.admin_token is not None else None

    def interceptors(self, on_refusal: RefusalHook | None = None) -> list[grpc.aio.ServerInterceptor]:
        """What to pass to ``grpc.aio.server(interceptors=...)``: nothing when auth is off."""
        if not self.enabled:
            return []
        return [AuthInterceptor(self.grants(), on_refusal=on_refusal, job_tokens=self.job_tokens())]


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc.aio is untyped
    """Checks the bearer token of every RPC against ``grants`` (see the module docstring)."""

    def __init__(
        self,
        grants: Sequence[TokenGrant],
        open_services: frozenset[str] = OPEN_SERVICES,
        on_refusal: RefusalHook | None = None,
        job_tokens: JobTokens | None = None,
    ) -> None:
        self._tokens = TokenCheck(grants)
        self._open_services = open_services
        self._on_refusal = on_refusal
        self._job_tokens = job_tokens

    def authorize(
        self, full_method: str, token: str | None
    ) -> tuple[str | None, grpc.StatusCode | None, str]:
        """(principal, None, "") when the call may proceed, else (principal, status, message): the
        principal of a token refused for want of the right to write, None without a valid token."""
        if full_method.lstrip("/").rpartition("/")[0] in self._open_services:
            return None, None, ""
        match, message = self._tokens.check(token)
        if match is None:
            scope = self.job_scope(token)
            if scope is None:
                return None, grpc.StatusCode.UNAUTHENTICATED, message
            if not is_read_method(full_method) and "/" + full_method.lstrip("/") not in JOB_WRITES:
                return (
                    scope.principal,
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"the {scope.principal} token may not call {full_method}: a job's token writes only"
                    " its own run's metrics and artifacts and its model version",
                )
            return scope.principal, *_writers_only(full_method, scope.principal)
        if not match.can_write and not is_read_method(full_method):
            return (
                match.principal,
                grpc.StatusCode.PERMISSION_DENIED,
                f"the {match.principal} token may not call {full_method}: it changes state",
            )
        if not match.can_write:
            return match.principal, *_writers_only(full_method, match.principal)
        return match.principal, None, ""

    def guarded_fields(self, full_method: str, token: str | None) -> tuple[str, ...]:
        """The request fields ``token``'s caller may not set on ``full_method`` (a read that writes when
        they are set, called without the right to write); empty when nothing needs checking."""
        fields = WRITING_REQUEST_FIELDS.get("/" + full_method.lstrip("/"), ())
        if not fields or not token:
            return ()
        return () if self.may_write(token) else fields

    def job_scope(self, token: str | None) -> JobScope | None:
        """The job and run of ``token`` when it is a valid job token, else None."""
        return self._job_tokens.verify(token) if self._job_tokens is not None else None

    def message_check(self, full_method: str, token: str | None, principal: str) -> MessageCheck | None:
        """What each request message of ``token``'s call must pass (None: nothing to check): the fields a
        caller without the right to write may not set, and a job token's own run."""
        method = "/" + full_method.lstrip("/")
        checks: list[MessageCheck] = []
        guarded = self.guarded_fields(method, token)
        if guarded:
            checks.append(functools.partial(_set_field, principal, method, guarded))
        scope = self.job_scope(token) if method in JOB_WRITES else None
        if scope is not None:
            checks.append(functools.partial(job_run_refusal, scope, method))
        if not checks:
            return None
        return lambda message: next((why for check in checks if (why := check(message))), None)

    def may_write(self, token: str | None) -> bool:
        """Whether ``token`` is a valid token with the right to change state."""
        match = self._tokens.match(token) if token else None
        return match is not None and match.can_write

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
            return rejecting_handler(handler, code, message, refused, actor)
        if principal is None:
            return handler
        check = self.message_check(method, token, principal)
        scope = self.job_scope(token) if principal.startswith(JOB_PRINCIPAL_PREFIX) else None
        job_run = None if scope is None else scope.run_id
        refused = None if self._on_refusal is None else functools.partial(self._on_refusal, method)
        return _as_principal(handler, principal, check, self.may_write(token), job_run, refused)


def _writers_only(full_method: str, principal: str) -> tuple[grpc.StatusCode | None, str]:
    """PERMISSION_DENIED for ``principal``, which may not write, on one of :data:`WRITERS_ONLY_READS`."""
    if "/" + full_method.lstrip("/") not in WRITERS_ONLY_READS:
        return None, ""
    return (
        grpc.StatusCode.PERMISSION_DENIED,
        f"the {principal} token may not call {full_method}: a job's output is read only with a token that"
        " may write (it may hold whatever the job printed)",
    )


def _as_principal(
    handler: Any,
    principal: str,
    check: MessageCheck | None = None,
    may_write: bool = True,
    job_run: str | None = None,
    refused: OnRefusal | None = None,
) -> grpc.RpcMethodHandler:
    """``handler`` with :data:`PRINCIPAL`, :data:`MAY_WRITE` and :data:`JOB_RUN` (the run of a job's
    token, else None) set for the duration of each call; with a ``check``, every request message passes
    it first (:func:`_check_message`), a refused one told to ``refused`` (the refusal hook)."""
    original = handler_behavior(handler)

    async def checked(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if check is None:
            return request
        if not handler.request_streaming:
            await _check_message(request, context, check, principal, refused)
            return request

        async def messages() -> AsyncIterator[Any]:
            # Checked as the servicer pulls each one: a later message could set the field too.
            async for message in request:
                await _check_message(message, context, check, principal, refused)
                yield message

        return messages()

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        PRINCIPAL.set(principal)  # the call runs in its own task: the value ends with it
        MAY_WRITE.set(may_write)
        JOB_RUN.set(job_run)
        return await original(await checked(request, context), context)

    async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        PRINCIPAL.set(principal)
        MAY_WRITE.set(may_write)
        JOB_RUN.set(job_run)
        async for response in original(await checked(request, context), context):
            yield response

    return rebuilt_handler(handler, unary, stream)


def _set_field(principal: str, method: str, guarded: tuple[str, ...], message: Any) -> str | None:
    """Why ``message`` is refused when it sets one of the ``guarded`` fields, else None."""
    for name in guarded:
        if getattr(message, name, None):
            return f"the {principal} token may not set {name} on {method}: it writes on the server"
    return None


async def _check_message(
    message: Any,
    context: grpc.aio.ServicerContext[Any, Any],
    check: MessageCheck,
    principal: str,
    refused: OnRefusal | None = None,
) -> None:
    """Aborts the call (PERMISSION_DENIED) when ``check`` refuses ``message``, telling ``refused`` first
    (which audits what it audits: a job token's write naming another run, a refused model operation).
    A hook that fails is logged: the caller is refused all the same."""
    why = check(message)
    if why is None:
        return
    if refused is not None:
        try:
            await refused(message, principal, grpc.StatusCode.PERMISSION_DENIED, why, context.peer())
        except Exception:
            _log.exception("the refusal hook failed on a refused call (%s)", why)
    await abort(context, grpc.StatusCode.PERMISSION_DENIED, why)
