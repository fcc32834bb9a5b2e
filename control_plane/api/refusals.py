"""Auditing refused model operations: a write of the model registry that is refused (by the registry's
rules, by a deployment still using a version, by the auth interceptor) leaves an audit entry saying who
tried what on which model or version, and why it was refused: outcome "refused: <status>: <message>".

Which refusals: every refused write RPC of ``aether.v1.ModelRegistry`` whose request names a model,
whatever the status (FAILED_PRECONDITION, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED, UNAUTHENTICATED,
and INVALID_ARGUMENT too: a review asking to make a version pending still names its target). A request
that names no model has no target to file the entry under, nothing about any model was at stake, and
logging it would let any caller fill the log with noise; it is not audited. Errors that are not refusals
(INTERNAL, UNAVAILABLE: the server failed, not the request) are not audited either. Reads are never
audited, refused or not.

The entry is written in a transaction of its own, after the operation's transaction has rolled back, so
the refusal is kept although the change is not. Writing it must not change what the caller is told:
when it fails (the database is down), the failure is logged and the caller still gets the refusal.

Refusals of callers without a valid token (UNAUTHENTICATED) are rate-limited: anyone who can reach the
port can send them, and one row each let a client hammering a model operation fill the audit log and
load the database for free. Per window (``fold_window_s``, a minute by default), the first
:data:`UNAUTHENTICATED_BURST` such refusals of one method from one peer host are written one by one;
the rest are counted, and when the window ends one more entry, filed under the last of them, says how
many were folded into it (nothing is dropped silently). The key leaves out the model, which the caller
chooses freely, and the peer's port, which each new connection changes; past
:data:`MAX_FOLD_KEYS` keys in a window (many addresses, an IPv6 range) the other hosts share one key.
A stopping server writes its pending counts (:meth:`RefusalAudit.close`). Refusals of callers with a
token (a read-only token on a write, the registry's own rules) are still audited one by one.

Refused writes of a job's own token (:mod:`control_plane.api.job_tokens`, actor ``job:<id>``) are
audited whatever the service, one by one like every refusal of a caller with a token: a write outside
the token's scope or naming another run (PERMISSION_DENIED, from the auth interceptor) and a write to
its run after the run ended (FAILED_PRECONDITION, :class:`~control_plane.tracking.records.RunEnded`,
from the servicer: :func:`audits_job_refusals`). A model registry write keeps its model's target; any
other is filed under the job (object type "job", the job's id, as its submit and cancel are), with the
refused method as the action. A job token is assumed to leak (it is as long-lived as the admin token),
so its refusals are rate-limited as unauthenticated ones are, keyed by the job instead of the peer host:
per window, the first :data:`UNAUTHENTICATED_BURST` refusals of one method by one job are written one
by one and the rest counted into one summary entry. The job's other errors (a malformed metric, a
missing artifact) are the job's bugs, not refusals of its token, and are not audited; nor are its
refused reads."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import model_registry_pb2 as pb
from clients.errors import AetherError
from control_plane.api.auth import is_read_method
from control_plane.api.identity import JOB_PRINCIPAL_PREFIX, actor_of, is_job_call
from control_plane.audit.log import record
from control_plane.db.engine import write_session
from control_plane.tracking.records import RunEnded

_log = logging.getLogger("aether.audit.refusals")

#: Statuses that mean "the server failed", not "the request was refused".
_NOT_REFUSALS = frozenset(
    {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN}
    | {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED, grpc.StatusCode.DATA_LOSS}
)
MODEL_REGISTRY = pb.DESCRIPTOR.services_by_name["ModelRegistry"].full_name
#: How long a refused call waits for its audit entry before it answers (the entry is written anyway).
REFUSAL_AUDIT_WAIT_S = 1.0
#: Unauthenticated refusals of one method from one peer host (a job token's: by one job) audited one by
#: one per fold window.
UNAUTHENTICATED_BURST = 5
DEFAULT_FOLD_WINDOW_S = 60.0
#: Keys (peer host, method) counted per window at most; the hosts beyond share :data:`OTHER_PEERS`.
MAX_FOLD_KEYS = 1024
OTHER_PEERS = "other peers"


@dataclass(frozen=True)
class Target:
    """What a refused call tried: the action and object its entry would have had had it succeeded."""

    action: str
    object_type: str
    object_id: str


def _version(name: str, version: int) -> str:
    return f"{name}/{version}"


def _review_action(request: pb.ReviewModelVersionRequest) -> str:
    return {pb.APPROVED: "approve", pb.REJECTED: "reject"}.get(request.decision, "review")


#: Per ModelRegistry write method: the model its request names, and its target (the same action,
#: object type and id a successful call records; registering a version has no number yet, so it is
#: filed under its model; a refused SetAlias is filed as "set": whether it would have created the alias
#: or moved it, recorded as "create" or "update" when it succeeds, is not known without reading it).
_MODEL_TARGETS: Mapping[str, Callable[[Any], tuple[str, Target]]] = {
    "CreateRegisteredModel": lambda r: (r.name, Target("create", "registered_model", r.name)),
    "DeleteRegisteredModel": lambda r: (r.name, Target("delete", "registered_model", r.name)),
    "CreateModelVersion": lambda r: (
        r.model_name,
        Target("create_version", "registered_model", r.model_name),
    ),
    "ReviewModelVersion": lambda r: (
        r.model_name,
        Target(_review_action(r), "model_version", _version(r.model_name, r.version)),
    ),
    "DeleteModelVersion": lambda r: (
        r.model_name,
        Target("delete", "model_version", _version(r.model_name, r.version)),
    ),
    "SetAlias": lambda r: (r.model_name, Target("set", "model_alias", f"{r.model_name}@{r.alias}")),
    "DeleteAlias": lambda r: (r.model_name, Target("delete", "model_alias", f"{r.model_name}@{r.alias}")),
}


def target_of(full_method: str, request: Any, actor: str = "") -> Target | None:
    """The target of a refused call of ``/package.Service/Method`` by ``actor``, or None when it is not
    audited (not a model registry write, or its request names no model; unless a job's token made a
    write: see the module docstring)."""
    return _model_target(full_method, request) or _job_target(full_method, actor)


def _model_target(full_method: str, request: Any) -> Target | None:
    service, _, method = full_method.lstrip("/").rpartition("/")
    target = _MODEL_TARGETS.get(method) if service == MODEL_REGISTRY else None
    if target is None or request is None:
        return None
    try:
        model, found = target(request)
    except AttributeError:  # not the method's request message
        return None
    return found if model else None


def _job_target(full_method: str, actor: str) -> Target | None:
    """A refused write of a job's token, filed under its job; None for any other caller, or a read."""
    if not actor.startswith(JOB_PRINCIPAL_PREFIX) or is_read_method(full_method):
        return None
    return Target("/" + full_method.lstrip("/"), "job", actor.removeprefix(JOB_PRINCIPAL_PREFIX))


def outcome_of(code: grpc.StatusCode, message: str) -> str:
    return f"refused: {code.name}: {message}"


def _storable(text: str) -> str:
    # The engine refuses text holding NUL before any statement runs (db/engine.py); a refused request
    # may well carry one, and its refusal must still be written.
    return text.replace("\x00", "\\x00")


def peer_host(peer: str) -> str:
    """``ipv4:10.0.0.7`` of gRPC's ``ipv4:10.0.0.7:51234`` (``ipv6:[::1]`` of ``ipv6:[::1]:51234``): the
    port changes with each connection, so it must not make a new key. Other forms are kept whole."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6") and ":" in rest:
        return f"{kind}:{rest.rpartition(':')[0]}"
    return peer or "unknown peer"


@dataclass
class _Fold:
    """Rate-limited refusals of one (peer host or job, method) in the current window."""

    written: int = 0
    folded: int = 0
    #: The last folded refusal's target, actor, status and message: the summary entry is filed under them.
    target: Target | None = None
    actor: str = ""
    code: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED
    message: str = ""


class RefusalAudit:
    """Records refused model operations in the audit log of ``sessions``; unauthenticated ones beyond
    ``burst`` per (peer host, method) and ``fold_window_s`` are counted into one entry (module docstring)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        fold_window_s: float = DEFAULT_FOLD_WINDOW_S,
        burst: int = UNAUTHENTICATED_BURST,
    ) -> None:
        self._sessions = sessions
        self._fold_window_s = fold_window_s
        self._burst = burst
        self._folds: dict[tuple[str, str], _Fold] = {}
        self._window_end: asyncio.TimerHandle | None = None
        self._summaries: set[asyncio.Future[None]] = set()  # written, not yet finished
        self._closed = False

    def record(self, target: Target, actor: str, code: grpc.StatusCode, message: str) -> None:
        """Appends the refusal in a write transaction of its own (blocking: call from a worker thread)."""
        with write_session(self._sessions) as session:
            record(
                session,
                actor=_storable(actor),
                action=target.action,
                object_type=target.object_type,
                object_id=_storable(target.object_id),
                before=None,
                after=None,
                outcome=_storable(outcome_of(code, message)),
            )

    async def refused(
        self, full_method: str, request: Any, actor: str, code: grpc.StatusCode, message: str, peer: str = ""
    ) -> None:
        """Records the refusal of ``full_method`` by ``peer`` (gRPC's ``context.peer()``) when it is
        audited (see the module docstring), or counts it into its window's summary entry; never raises,
        so the caller is told of the refusal, not of a failure to log it."""
        target = target_of(full_method, request, actor)
        if target is None or code in _NOT_REFUSALS:
            return
        limited = code == grpc.StatusCode.UNAUTHENTICATED or actor.startswith(JOB_PRINCIPAL_PREFIX)
        if limited and self._fold(full_method, peer, target, actor, code, message):
            return
        write = self._write(full_method, target, actor, code, message)
        # Waited for, so the entry is in the log when the caller hears of the refusal, but not for long:
        # behind a held write lock the write waits out the database's busy timeout (30 s), and a refusal
        # that needs no database at all (a malformed name) must not wait with it. It goes on after that.
        await asyncio.wait([write], timeout=REFUSAL_AUDIT_WAIT_S)

    def _write(
        self, full_method: str, target: Target, actor: str, code: grpc.StatusCode, message: str
    ) -> asyncio.Future[None]:
        write = asyncio.ensure_future(asyncio.to_thread(self.record, target, actor, code, message))
        write.add_done_callback(functools.partial(_log_failure, full_method, code, message))
        return write

    def _fold(
        self, full_method: str, peer: str, target: Target, actor: str, code: grpc.StatusCode, message: str
    ) -> bool:
        """Counts an unauthenticated refusal, or a job token's; True when it is folded (not written now)."""
        if self._closed:  # a refusal in the stop's grace period: no window end will come to write it
            return False
        if self._window_end is None:
            self._window_end = asyncio.get_running_loop().call_later(self._fold_window_s, self._end_window)
        # A job is one key wherever it calls from; a caller without a token is known by its host only.
        source = actor if actor.startswith(JOB_PRINCIPAL_PREFIX) else peer_host(peer)
        key = (source, full_method)
        if key not in self._folds and len(self._folds) >= MAX_FOLD_KEYS:
            key = (OTHER_PEERS, full_method)
        fold = self._folds.setdefault(key, _Fold())
        if fold.written < self._burst:
            fold.written += 1
            return False
        fold.folded += 1
        fold.target, fold.actor, fold.code, fold.message = target, actor, code, message
        return True

    def _end_window(self) -> None:
        """Writes one summary entry per key that folded refusals, and starts a new window."""
        self._window_end = None
        folds, self._folds = self._folds, {}
        for (host, method), fold in folds.items():
            if fold.folded and fold.target is not None:
                summary = (
                    f"{fold.message}; {fold.folded} more refusals of {method} from {host} in "
                    f"{self._fold_window_s:g} s were folded into this entry"
                )
                write = self._write(method, fold.target, fold.actor, fold.code, summary)
                self._summaries.add(write)
                write.add_done_callback(self._summaries.discard)

    async def close(self) -> None:
        """Writes the counts of the current window now (the server is stopping) and audits any later
        unauthenticated refusal one by one. Call it while the database is still open."""
        self._closed = True
        if self._window_end is not None:
            self._window_end.cancel()
        self._end_window()
        if self._summaries:
            await asyncio.wait(set(self._summaries))


def _log_failure(full_method: str, code: grpc.StatusCode, message: str, write: asyncio.Future[None]) -> None:
    if not write.cancelled() and write.exception() is not None:
        _log.error(
            "could not audit the refused call %s (%s: %s)",
            full_method,
            code.name,
            message,
            exc_info=write.exception(),
        )


T = TypeVar("T")
Behavior = Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[T]]


def audits_job_refusals(service: str) -> Callable[[Behavior[T]], Behavior[T]]:
    """Decorates a method of ``service``'s servicer that a job's token may call (its ``refusals``, a
    :class:`RefusalAudit` or None): a :class:`~control_plane.tracking.records.RunEnded` it raises for a
    job token's call is recorded as a refusal of the RPC of the method's name, then raised on (put it
    under ``maps_errors``). Recording never raises: the caller is told of the refusal, whatever the log
    did."""

    def decorate(behavior: Behavior[T]) -> Behavior[T]:
        full_method = f"/{service}/{behavior.__name__}"

        @functools.wraps(behavior)
        async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> T:
            try:
                return await behavior(self, request, context)
            except RunEnded as error:
                refusals: RefusalAudit | None = self.refusals
                if refusals is not None and is_job_call():
                    # A streamed request is not read again here (its target needs none of it).
                    message = request if isinstance(request, Message) else None
                    await _tell(refusals, full_method, message, actor_of(context), error, context.peer())
                raise

        return wrapper

    return decorate


async def _tell(
    refusals: RefusalAudit, full_method: str, request: Any, actor: str, error: AetherError, peer: str
) -> None:
    try:
        await refusals.refused(full_method, request, actor, error.code, error.message, peer)
    except Exception:  # refused() does not raise; should it ever, the refusal still stands
        _log.exception("could not audit the refused call %s", full_method)


def audits_refusals(behavior: Behavior[T]) -> Behavior[T]:
    """Decorates a unary method of the model registry's servicer (which has a ``refusals``
    :class:`RefusalAudit`): an :class:`AetherError` it raises is recorded as a refusal of the RPC of the
    method's name, then raised on (put it under ``maps_errors``, which turns it into the status)."""
    full_method = f"/{MODEL_REGISTRY}/{behavior.__name__}"

    @functools.wraps(behavior)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> T:
        try:
            return await behavior(self, request, context)
        except AetherError as error:
            refusals: RefusalAudit = self.refusals
            actor = actor_of(context)
            await refusals.refused(full_method, request, actor, error.code, error.message, context.peer())
            raise

    return wrapper
