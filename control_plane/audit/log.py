"""Appending to the audit log: :func:`record` (one entry) and :func:`record_many` (several, e.g. every
run a tracking batch creates or ends), called by mutating operations inside their own write transaction,
so the entries commit or roll back with the change they describe. A refused operation (``outcome``
"refused: ...") is recorded in a transaction of its own after the operation's has rolled back
(:mod:`control_plane.api.refusals`).

Appends are serialized by locking the head row (``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite the
write transaction from ``write_session`` already holds the database write lock and SQLAlchemy omits
``FOR UPDATE``). Lock order: callers lock their own rows first and the audit head last, and nothing locks
the head before anything else, so the head lock adds no deadlock.

:func:`record_many` locks the head once, chains the entries' hashes in Python, writes them with one
executemany INSERT and moves the head once: n entries cost three statements, not 3n (an append costs
~1-2 ms of statement overhead, which dominated a tracking batch that creates and ends hundreds of runs).
The chain is the same as n calls of :func:`record` would write, so :mod:`~control_plane.audit.verify`
cannot tell them apart."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.orm import Session

from control_plane.audit.bound import bounded
from control_plane.audit.chain import GENESIS_HASH, AuditEntry, entry_hash, normalize
from control_plane.audit.tables import (
    ACTION_LENGTH,
    ACTOR_LENGTH,
    OBJECT_ID_LENGTH,
    OBJECT_TYPE_LENGTH,
    OUTCOME_LENGTH,
    AuditEntryRow,
    AuditHeadRow,
)

HEAD_ROW_ID = 1
# Core tables, not the ORM classes: an ORM-enabled bulk INSERT inspects every row's values in Python.
_ENTRIES = cast(Table, AuditEntryRow.__table__)
_HEAD = cast(Table, AuditHeadRow.__table__)
_LOCK_HEAD = select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == HEAD_ROW_ID).with_for_update()


@dataclass(frozen=True)
class AuditEvent:
    """What one entry says, before it gets its place in the chain (sequence number, time and hashes).
    ``before``/``after`` are the object's state around the change (None for a create or a delete)."""

    actor: str
    action: str
    object_type: str
    object_id: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    #: "" for a change carried out; "refused: <gRPC status name>: <message>" for a refused operation.
    outcome: str = ""


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    outcome: str = "",
) -> AuditEntry:
    """Appends one hash-chained entry inside the caller's write transaction (``write_session``) and
    returns it. ``before``/``after`` are stored as JSON (see :func:`~control_plane.audit.chain.normalize`),
    their largest values replaced by markers when together they exceed 1 MiB
    (:mod:`~control_plane.audit.bound`)."""
    event = AuditEvent(actor, action, object_type, object_id, before, after, outcome)
    return record_many(session, [event])[0]


def record_many(session: Session, events: Sequence[AuditEvent]) -> list[AuditEntry]:
    """Appends ``events`` in order as consecutive hash-chained entries inside the caller's write
    transaction and returns them (nothing is written, and the head is not locked, for no events)."""
    if not events:
        return []
    head_seq, head_hash = lock_head(session)
    timestamp_us = time.time_ns() // 1000
    entries = []
    for seq, event in enumerate(events, start=head_seq + 1):
        # Bounded before hashing: the chain covers what is stored, markers included.
        before, after = bounded(normalize(event.before), normalize(event.after))
        fields = {
            "seq": seq,
            "timestamp_us": timestamp_us,
            "actor": _clip(event.actor or "anonymous", ACTOR_LENGTH),
            "action": _clip(event.action, ACTION_LENGTH),
            "object_type": _clip(event.object_type, OBJECT_TYPE_LENGTH),
            "object_id": _clip(event.object_id, OBJECT_ID_LENGTH),
            "before": before,
            "after": after,
            "prev_hash": head_hash,
            "outcome": _clip(event.outcome, OUTCOME_LENGTH),
        }
        head_hash = entry_hash(**fields)
        entries.append(AuditEntry(**fields, hash=head_hash))
    # Every row names every column (``to_json`` leaves an empty outcome out): one executemany INSERT
    # needs the same keys in each row.
    session.execute(insert(_ENTRIES), [entry.to_json() | {"outcome": entry.outcome} for entry in entries])
    last = entries[-1]
    session.execute(update(_HEAD).where(_HEAD.c.id == HEAD_ROW_ID).values(seq=last.seq, hash=last.hash))
    return entries


def lock_head(session: Session) -> tuple[int, str]:
    """Locks the head row for the rest of the transaction and returns (seq, hash) of the newest entry;
    creates the row when the database was built from the models rather than the migrations."""
    # Core select, not the ORM identity map: after waiting for the lock we need the committed values.
    row = session.execute(_LOCK_HEAD).one_or_none()
    if row is None:
        session.execute(insert(_HEAD).values(id=HEAD_ROW_ID, seq=0, hash=GENESIS_HASH))
        return 0, GENESIS_HASH
    return int(row.seq), str(row.hash)


def _clip(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"
