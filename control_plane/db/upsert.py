"""Create-or-replace of a row by its primary key, safe under concurrent writers on both databases.

A read of the row, then an insert when there was none, is a race on PostgreSQL: two transactions that
both find nothing both insert, and the second fails with a unique violation (INTERNAL to its caller).
And a read without a lock is a race for whoever reads the row to replace it: two replacements both read
the same old row, and both audit it as their "before". So the row is first inserted with ``ON CONFLICT
DO NOTHING`` (an insert that meets a concurrent one waits for it to commit, then does nothing), and then
read ``FOR UPDATE``: the caller holds the row, as committed last, until its own commit. On SQLite the
write transaction already holds the database's write lock, and SQLAlchemy leaves out ``FOR UPDATE``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from sqlalchemy import inspect, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Session

from clients.errors import Aborted, InvalidArgument

Row = TypeVar("Row", bound=DeclarativeBase)


def insert_or_lock(session: Session, table: type[Row], values: Mapping[str, Any]) -> tuple[Row, bool]:
    """The row of ``table`` with the primary key in ``values``, locked until the commit, and whether it
    was created (with ``values``) by this call; an existing row is returned as it is, for the caller to
    read its old state and change it."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    key = inspect(table).primary_key
    created = session.execute(insert(table).values(**values).on_conflict_do_nothing().returning(*key)).first()
    # populate_existing: after waiting for a lock, the committed values, not what the session holds.
    query = select(table).where(*(column == values[column.name] for column in key)).with_for_update()
    row = session.scalars(query.execution_options(populate_existing=True)).one()
    return row, created is not None


def next_revision(before: Mapping[str, Any] | None, expected: int | None, what: str) -> int:
    """The revision a replacement of the stored JSON config ``before`` (None: none stored) gets: one more
    than the stored one (0 for none, or one stored before configs had revisions). With ``expected`` (the
    revision the caller read) it is compared under the caller's row lock, and a stale one raises
    ``Aborted`` naming ``what`` and the stored revision, so the caller's transaction rolls back: two
    clients that each read, change one field and send the whole config back both used to succeed, the
    second silently undoing the first's change."""
    # MessageToDict writes an int64 as a string, and leaves out a zero.
    current = int((before or {}).get("revision", 0))
    check_revision(current, expected, what)
    return current + 1


def check_revision(current: int, expected: int | None, what: str) -> None:
    """Refuses a write whose ``expected`` revision (None: unconditional) is not ``current``: ``Aborted``
    when it is stale (re-read and retry), ``InvalidArgument`` when no read could have given it (below 0:
    retrying could never succeed, so it must not say "retry")."""
    if expected is None:
        return
    if expected < 0:
        raise InvalidArgument(f"expected_revision must be 0 or more (a revision read), not {expected}")
    if expected != current:
        raise Aborted(
            f"{what} changed since it was read (read at revision {expected}, now at revision {current});"
            " nothing was changed: read it again and re-apply the change"
        )
