"""Who is calling: the actor recorded in the audit log for a request.

When auth is on, :class:`control_plane.api.auth.AuthInterceptor` has checked the bearer token and put
the token's principal (e.g. "admin", "readonly") into :data:`PRINCIPAL`, and whether it may write into
:data:`MAY_WRITE`, for the duration of the call;
that principal is the actor, and a self-declared ``x-aether-actor`` header cannot override it. Without
auth the caller's ``x-aether-actor`` metadata names the actor (informational only: anyone can claim any
name), percent-decoded (a client encodes a name like "José", which gRPC metadata cannot carry as it is),
else "anonymous"."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any
from urllib.parse import unquote

import grpc.aio

ACTOR_METADATA_KEY = "x-aether-actor"
ANONYMOUS = "anonymous"
_MAX_ACTOR_LENGTH = 128

#: The authenticated principal of the RPC being handled (None when auth is off). grpc.aio runs each RPC
#: in its own task, so a value set by the interceptor's handler wrapper is seen by that call only.
PRINCIPAL: ContextVar[str | None] = ContextVar("aether_principal", default=None)
#: Whether the caller of the RPC being handled may change state: False for a token without the right to
#: write (the read-only token), set by the interceptor beside :data:`PRINCIPAL`; True without auth. A read
#: that would otherwise leave something behind on the server (GetHistoricalFeatures' lineage record)
#: asks it, so that a read-only caller changes nothing.
MAY_WRITE: ContextVar[bool] = ContextVar("aether_may_write", default=True)
#: The principal of a job's own token (``control_plane.api.job_tokens``): ``job:<job id>``. Only the
#: interceptor sets :data:`PRINCIPAL`, and only to this after checking the token's HMAC.
JOB_PRINCIPAL_PREFIX = "job:"
#: The run a job's token writes (``control_plane.api.job_tokens``), set by the interceptor beside
#: :data:`PRINCIPAL` for a call made with one; None for every other call. A write that names no run
#: (``Artifacts/Upload``) checks through it that the token's run has not ended.
JOB_RUN: ContextVar[str | None] = ContextVar("aether_job_run", default=None)


def is_job_call() -> bool:
    """Whether the call being handled was made with a job's own token."""
    return (PRINCIPAL.get() or "").startswith(JOB_PRINCIPAL_PREFIX)


def records_lineage() -> bool:
    """Whether the caller's training sets are recorded for lineage (``_datasets/<hash>.json``): a caller
    that may write, or a job's own token, whose set is what its model version names. Not the read-only
    token, which changes nothing on the server."""
    return MAY_WRITE.get() or is_job_call()


def actor_of(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    principal = PRINCIPAL.get()
    if principal is not None:
        return principal
    for key, value in context.invocation_metadata() or ():
        if key == ACTOR_METADATA_KEY and isinstance(value, str):
            # Clients percent-encode what metadata cannot carry (clients.sdk.service_client.actor_header).
            decoded = unquote(value, errors="replace")
            declared = "".join(ch for ch in decoded.strip() if ch.isprintable())[:_MAX_ACTOR_LENGTH]
            if declared:
                return declared
    return ANONYMOUS
