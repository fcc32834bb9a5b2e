"""Reading the audit log: entries by object and time range, a page at a time, in sequence order."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, sessionmaker

from clients.errors import InvalidArgument
from control_plane.audit.chain import AuditEntry
from control_plane.audit.tables import AuditEntryRow
from control_plane.db.engine import read_session

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class AuditFilter:
    """Which entries to read; every field narrows, None means "any". Times are microseconds since the
    epoch: ``since_us`` inclusive, ``until_us`` exclusive."""

    object_type: str | None = None
    object_id: str | None = None
    since_us: int | None = None
    until_us: int | None = None

    def __post_init__(self) -> None:
        if self.object_id is not None and self.object_type is None:
            raise InvalidArgument("an audit query by object id needs the object type too")
        if self.since_us is not None and self.until_us is not None and self.until_us < self.since_us:
            raise InvalidArgument(
                f"audit query range ends ({self.until_us}) before it starts ({self.since_us})"
            )


@dataclass(frozen=True)
class AuditPage:
    entries: list[AuditEntry]
    #: Pass as ``after_seq`` to read the next page; None when this page is the last.
    next_after_seq: int | None


def entry_of(row: AuditEntryRow) -> AuditEntry:
    return AuditEntry(
        seq=row.seq,
        timestamp_us=row.timestamp_us,
        actor=row.actor,
        action=row.action,
        object_type=row.object_type,
        object_id=row.object_id,
        before=row.before,
        after=row.after,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


def _filtered(where: AuditFilter, after_seq: int) -> Select[AuditEntryRow]:
    statement = select(AuditEntryRow).where(AuditEntryRow.seq > after_seq)
    if where.object_type is not None:
        statement = statement.where(AuditEntryRow.object_type == where.object_type)
    if where.object_id is not None:
        statement = statement.where(AuditEntryRow.object_id == where.object_id)
    if where.since_us is not None:
        statement = statement.where(AuditEntryRow.timestamp_us >= where.since_us)
    if where.until_us is not None:
        statement = statement.where(AuditEntryRow.timestamp_us < where.until_us)
    return statement.order_by(AuditEntryRow.seq)


def query_page(
    session: Session, where: AuditFilter, after_seq: int = 0, limit: int = DEFAULT_PAGE_SIZE
) -> AuditPage:
    """Up to ``limit`` matching entries with ``seq > after_seq``, oldest first."""
    if limit <= 0:
        limit = DEFAULT_PAGE_SIZE
    if limit > MAX_PAGE_SIZE:
        raise InvalidArgument(f"audit page size {limit} exceeds the maximum of {MAX_PAGE_SIZE}")
    if after_seq < 0:
        raise InvalidArgument(f"audit page cursor {after_seq} is negative")
    # One row beyond the page tells whether another page follows.
    rows = session.scalars(_filtered(where, after_seq).limit(limit + 1)).all()
    entries = [entry_of(row) for row in rows[:limit]]
    return AuditPage(entries, entries[-1].seq if len(rows) > limit else None)


def iter_entries(
    sessions: sessionmaker[Session], where: AuditFilter | None = None, batch_size: int = 500
) -> Iterator[AuditEntry]:
    """Every matching entry, oldest first, read in batches (each batch its own short read transaction,
    so a long export does not hold one snapshot open)."""
    after_seq = 0
    while True:
        with read_session(sessions) as session:
            page = query_page(session, where or AuditFilter(), after_seq, min(batch_size, MAX_PAGE_SIZE))
        yield from page.entries
        if page.next_after_seq is None:
            return
        after_seq = page.next_after_seq
