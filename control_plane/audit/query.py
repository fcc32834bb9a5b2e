"""Reading the audit log: entries by object, time range and outcome (carried out or refused), a page at
a time, in sequence order."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeAlias

from sqlalchemy import ColumnElement, Row, Select, Text, cast, or_, select
from sqlalchemy.orm import Session, sessionmaker

from clients.errors import InvalidArgument
from control_plane.audit.chain import AuditEntry
from control_plane.audit.tables import AuditEntryRow
from control_plane.db import strings
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
    #: True: only refused operations; False: only changes carried out.
    refused: bool | None = None

    def __post_init__(self) -> None:
        if self.object_id is not None and self.object_type is None:
            raise InvalidArgument(
                f"filter.object_type: an audit query by object id {self.object_id[:200]!r} needs the"
                " object type too (ids are unique within a type only)"
            )
        if self.since_us is not None and self.until_us is not None and self.until_us < self.since_us:
            raise InvalidArgument(
                f"filter.until_us: the audit query range ends ({self.until_us}) before it starts"
                f" ({self.since_us}, filter.since_us)"
            )


@dataclass(frozen=True)
class AuditPage:
    entries: list[AuditEntry]
    #: Pass as ``after_seq`` to read the next page; None when this page is the last.
    next_after_seq: int | None


#: The columns of an entry, ``before``/``after`` as their stored text: read through the JSON type, one
#: row edited to hold text that is not JSON raised while loading the batch, so verify failed INTERNAL
#: instead of naming the entry, and list/export could not read any page holding it.
ENTRY_COLUMNS = (
    AuditEntryRow.seq,
    AuditEntryRow.timestamp_us,
    AuditEntryRow.actor,
    AuditEntryRow.action,
    AuditEntryRow.object_type,
    AuditEntryRow.object_id,
    cast(AuditEntryRow.before, Text).label("before"),
    cast(AuditEntryRow.after, Text).label("after"),
    AuditEntryRow.prev_hash,
    AuditEntryRow.hash,
    AuditEntryRow.outcome,
)


#: A row of ``ENTRY_COLUMNS`` (typed loosely: SQLAlchemy types rows by their column tuple).
EntryRow: TypeAlias = Row[*tuple[Any, ...]]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decoded(column: str, stored: str | None) -> tuple[Any, str]:
    """The value of a stored JSON column and "" or, when it does not decode, None and what is wrong.
    NaN and Infinity are refused: the log stores them as strings (``chain.normalize``), so a literal
    one was written by someone else, and it could not be hashed or sent as JSON."""
    if stored is None:
        return None, ""
    try:
        return json.loads(stored, parse_constant=_no_constant), ""
    except (ValueError, RecursionError) as error:
        return None, f"{column} is not valid JSON ({error}; stored text {stored[:60]!r})"


def entry_of(row: EntryRow) -> AuditEntry:
    """An entry from a row of ``ENTRY_COLUMNS``; one whose before/after does not decode is marked
    ``damaged`` (that value None) rather than raising, so it is reported, not fatal."""
    before, before_damage = _decoded("before", row.before)
    after, after_damage = _decoded("after", row.after)
    return AuditEntry(
        seq=row.seq,
        timestamp_us=row.timestamp_us,
        actor=row.actor,
        action=row.action,
        object_type=row.object_type,
        object_id=row.object_id,
        before=before,
        after=after,
        prev_hash=row.prev_hash,
        hash=row.hash,
        outcome=row.outcome,
        damaged="; ".join(damage for damage in (before_damage, after_damage) if damage),
    )


#: What separates an object's id from the ids of the objects under it: a feature view's versions
#: (``zone_weather:v1``, its ingestion entries), a model's versions (``demand/1``) and a model's aliases
#: (``demand@champion``). No name may hold one, so ``demand`` never selects ``demand2/1`` or ``demand-x@a``.
ID_SEPARATORS = (":", "/", "@")


def object_id_matches(object_id: str) -> ColumnElement[bool]:
    """The id itself, or an id under it: ``object_id`` followed by a separator, then anything.

    The prefix is compared with ``substr``, not LIKE: LIKE ignores the case of ASCII letters on SQLite
    (``Zone:v1`` would match ``zone``) and gives ``%`` and ``_``, frequent in names, a meaning of their
    own; ``substr`` compares the text exactly on SQLite and PostgreSQL alike."""
    column = AuditEntryRow.object_id
    prefixes = [object_id + separator for separator in ID_SEPARATORS]
    return or_(
        column == object_id,
        *(strings.starts_with(column, prefix) for prefix in prefixes),
    )


def _filtered(where: AuditFilter, after_seq: int) -> Select[*tuple[Any, ...]]:
    statement = select(*ENTRY_COLUMNS).where(AuditEntryRow.seq > after_seq)
    if where.object_type is not None:
        statement = statement.where(AuditEntryRow.object_type == where.object_type)
    if where.object_id is not None:
        statement = statement.where(object_id_matches(where.object_id))
    if where.since_us is not None:
        statement = statement.where(AuditEntryRow.timestamp_us >= where.since_us)
    if where.until_us is not None:
        statement = statement.where(AuditEntryRow.timestamp_us < where.until_us)
    if where.refused is not None:
        refused = AuditEntryRow.outcome != ""
        statement = statement.where(refused if where.refused else ~refused)
    return statement.order_by(AuditEntryRow.seq)


def query_page(
    session: Session, where: AuditFilter, after_seq: int = 0, limit: int = DEFAULT_PAGE_SIZE
) -> AuditPage:
    """Up to ``limit`` matching entries with ``seq > after_seq``, oldest first; ``limit`` 0 means the
    default page size. A negative one is refused like an oversized one (it was taken as the default)."""
    if not 0 <= limit <= MAX_PAGE_SIZE:
        raise InvalidArgument(
            f"page_size: expected 0 (the default, {DEFAULT_PAGE_SIZE}) to {MAX_PAGE_SIZE}, got {limit}"
        )
    limit = limit or DEFAULT_PAGE_SIZE
    if after_seq < 0:
        raise InvalidArgument(f"audit page cursor {after_seq} is negative")
    # One row beyond the page tells whether another page follows.
    rows = session.execute(_filtered(where, after_seq).limit(limit + 1)).all()
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
