"""Appending to the audit log: :func:`record`, called by every mutating operation inside its own write
transaction, so the entry commits or rolls back with the change it describes.

Appends are serialized by locking the head row (``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite the
write transaction from ``write_session`` already holds the database write lock and SQLAlchemy omits
``FOR UPDATE``). Lock order: callers lock their own rows first and the audit head last, and nothing locks
the head before anything else, so the head lock adds no deadlock."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from control_plane.audit.chain import GENESIS_HASH, AuditEntry, entry_hash, normalize
from control_plane.audit.tables import (
    ACTION_LENGTH,
    ACTOR_LENGTH,
    OBJECT_ID_LENGTH,
    OBJECT_TYPE_LENGTH,
    AuditEntryRow,
    AuditHeadRow,
)

HEAD_ROW_ID = 1


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
) -> AuditEntry:
    """Appends one hash-chained entry inside the caller's write transaction (``write_session``) and
    returns it. ``before``/``after`` are the object's state around the change (None for a create or a
    delete); they are stored as JSON (see :func:`~control_plane.audit.chain.normalize`)."""
    head_seq, head_hash = lock_head(session)
    entry_before, entry_after = normalize(before), normalize(after)
    seq = head_seq + 1
    timestamp_us = time.time_ns() // 1000
    fields = {
        "seq": seq,
        "timestamp_us": timestamp_us,
        "actor": _clip(actor or "anonymous", ACTOR_LENGTH),
        "action": _clip(action, ACTION_LENGTH),
        "object_type": _clip(object_type, OBJECT_TYPE_LENGTH),
        "object_id": _clip(object_id, OBJECT_ID_LENGTH),
        "before": entry_before,
        "after": entry_after,
        "prev_hash": head_hash,
    }
    digest = entry_hash(**fields)
    session.execute(insert(AuditEntryRow).values(**fields, hash=digest))
    session.execute(update(AuditHeadRow).where(AuditHeadRow.id == HEAD_ROW_ID).values(seq=seq, hash=digest))
    return AuditEntry(**fields, hash=digest)


def lock_head(session: Session) -> tuple[int, str]:
    """Locks the head row for the rest of the transaction and returns (seq, hash) of the newest entry;
    creates the row when the database was built from the models rather than the migrations."""
    # Core select, not the ORM identity map: after waiting for the lock we need the committed values.
    row = session.execute(
        select(AuditHeadRow.seq, AuditHeadRow.hash).where(AuditHeadRow.id == HEAD_ROW_ID).with_for_update()
    ).one_or_none()
    if row is None:
        session.execute(insert(AuditHeadRow).values(id=HEAD_ROW_ID, seq=0, hash=GENESIS_HASH))
        return 0, GENESIS_HASH
    return int(row.seq), str(row.hash)


def _clip(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"
