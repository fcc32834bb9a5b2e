"""The ``aether.v1.Audit`` gRPC service: queries, verifies and exports the audit log. Every call reads
SQL, so each runs its core in a worker thread."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc.aio
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import audit_pb2 as pb
from clients.aether.v1 import audit_pb2_grpc
from clients.errors import maps_errors
from clients.server_handlers import HandlerRegistry
from control_plane.audit.chain import AuditEntry, canonical_json
from control_plane.audit.query import AuditFilter, AuditPage, query_page
from control_plane.audit.tables import AuditEntryRow
from control_plane.audit.verify import VerifyResult, verify_chain
from control_plane.db import keyset, pages
from control_plane.db.engine import read_session

if TYPE_CHECKING:  # the server module imports the api modules: no import cycle at run time
    from control_plane.api.context import ServiceContext

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
AUDIT_SERVICE = pb.DESCRIPTOR.services_by_name["Audit"].full_name
#: Entries read per round of an export. Each round is streamed as one or more messages, each cut to
#: ``pages.MAX_PAGE_BYTES`` (:func:`pages.chunks`): a count alone does not bound a message.
EXPORT_BATCH = 200
#: A QueryAudit page token carries the ``seq`` (a 64-bit ``BigInteger``) of the previous page's last entry.
MAX_SEQ = 2**63 - 1
_LISTING = "QueryAudit"
_SEQ_KEY = keyset.KeyColumn(AuditEntryRow.seq.expression, int)


def entry_message(entry: AuditEntry) -> pb.AuditEntry:
    message = pb.AuditEntry(
        seq=entry.seq,
        timestamp_us=entry.timestamp_us,
        actor=entry.actor,
        action=entry.action,
        object_type=entry.object_type,
        object_id=entry.object_id,
        prev_hash=entry.prev_hash,
        hash=entry.hash,
        outcome=entry.outcome,
        damaged=entry.damaged,
    )
    if entry.before is not None:
        message.before_json = canonical_json(entry.before)
    if entry.after is not None:
        message.after_json = canonical_json(entry.after)
    return message


def filter_of(message: pb.AuditFilter) -> AuditFilter:
    return AuditFilter(
        object_type=message.object_type or None,
        object_id=message.object_id or None,
        since_us=message.since_us if message.HasField("since_us") else None,
        until_us=message.until_us if message.HasField("until_us") else None,
        refused=message.refused if message.HasField("refused") else None,
    )


def _scope(where: AuditFilter) -> str:
    """What a QueryAudit token is good for: the filter of the query that gave it out. A ``seq`` alone
    named none, so a token given to another filter silently skipped that filter's entries up to it."""
    return keyset.scope_digest(
        where.object_type, where.object_id, where.since_us, where.until_us, where.refused
    )


def _cursor(page_token: str, where: AuditFilter) -> int:
    return keyset.position(page_token, _LISTING, _scope(where), _SEQ_KEY, MAX_SEQ, scope_name="filter")


def _token(where: AuditFilter, after_seq: int) -> str:
    return keyset.encode(_LISTING, _scope(where), [after_seq])


class AuditServicer(audit_pb2_grpc.AuditServicer):
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def _page(self, where: AuditFilter, after_seq: int, limit: int) -> AuditPage:
        with read_session(self._sessions) as session:
            return query_page(session, where, after_seq, limit)

    @maps_errors
    async def QueryAudit(self, request: pb.QueryAuditRequest, context: Context) -> pb.QueryAuditResponse:
        where = filter_of(request.filter)
        after_seq = _cursor(request.page_token, where)
        page = await asyncio.to_thread(self._page, where, after_seq, request.page_size)
        # Cut by size too: an entry holds a whole before and after (a run's parameters, a view's
        # description), and a page of 100 such entries outgrew gRPC's 4 MiB, failing for good.
        entries = list(pages.fitting(entry_message(entry) for entry in page.entries))
        if len(entries) < len(page.entries):
            token = _token(where, entries[-1].seq)
        else:
            token = "" if page.next_after_seq is None else _token(where, page.next_after_seq)
        return pb.QueryAuditResponse(entries=entries, next_page_token=token)

    @maps_errors
    async def VerifyAudit(self, request: pb.VerifyAuditRequest, context: Context) -> pb.VerifyAuditResponse:
        result: VerifyResult = await asyncio.to_thread(verify_chain, self._sessions)
        return pb.VerifyAuditResponse(
            ok=result.ok,
            entries_checked=result.entries_checked,
            head_seq=result.head_seq,
            head_hash=result.head_hash,
            first_bad_seq=result.first_bad_seq or 0,
            reason=result.reason,
        )

    @maps_errors
    async def ExportAudit(
        self, request: pb.ExportAuditRequest, context: Context
    ) -> AsyncIterator[pb.ExportAuditChunk]:
        where = filter_of(request.filter)
        after_seq = 0
        while True:
            page = await asyncio.to_thread(self._page, where, after_seq, EXPORT_BATCH)
            # 200 entries of a model version's 64 large hyperparameters each took more than gRPC's
            # 4 MiB in one message, and the export failed RESOURCE_EXHAUSTED for good.
            for chunk in pages.chunks(entry_message(entry) for entry in page.entries):
                yield pb.ExportAuditChunk(entries=chunk)
            if page.next_after_seq is None:
                return
            after_seq = page.next_after_seq


def add_to_server(server: HandlerRegistry, context: ServiceContext) -> str:
    audit_pb2_grpc.add_AuditServicer_to_server(AuditServicer(context.sessions), server)  # type: ignore[no-untyped-call]
    return AUDIT_SERVICE
