"""The registry revision counter (see :class:`~control_plane.db.models.RegistryRevisionRow`)."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from control_plane.db.models import RegistryRevisionRow

_ROW_ID = 1
#: Key of ``Session.info`` holding the revision a transaction bumped to, for notifying after commit.
BUMPED_REVISION = "aether_bumped_revision"


def lock_registry(session: Session) -> None:
    """Serializes registry writers on back ends with row locks (PostgreSQL): every write transaction
    locks the revision row first, so a check-then-insert cannot race another writer. SQLite needs no
    row lock (write transactions there begin with the database write lock) and SQLAlchemy omits
    ``FOR UPDATE`` for it."""
    session.execute(select(RegistryRevisionRow.id).where(RegistryRevisionRow.id == _ROW_ID).with_for_update())


def bump_revision(session: Session) -> int:
    """Increments the revision inside the caller's transaction and returns the new value."""
    result = session.execute(
        update(RegistryRevisionRow)
        .where(RegistryRevisionRow.id == _ROW_ID)
        .values(revision=RegistryRevisionRow.revision + 1)
        .returning(RegistryRevisionRow.revision)
    )
    revision = result.scalar_one_or_none()
    if revision is None:  # a database created from the models rather than the migrations
        session.add(RegistryRevisionRow(id=_ROW_ID, revision=1))
        session.flush()
        revision = 1
    session.info[BUMPED_REVISION] = revision
    return revision


def current_revision(session: Session) -> int:
    revision = session.scalar(select(RegistryRevisionRow.revision).where(RegistryRevisionRow.id == _ROW_ID))
    return revision or 0
