"""Exactly-once ``LogBatch`` writes over the SDK's at-least-once delivery: a request the server committed
but whose answer was lost (a timeout, a dropped connection) is sent again by the SDK, and must not write
its points a second time.

A keyed request carries (sender id, sequence): the sender picks the id at random and numbers its distinct
requests in the order it sends them, one at a time; a retry repeats the key. The server keeps, per sender,
the highest sequence it applied, in the transaction that writes the request; a request at or below it was
applied (or superseded) and is answered as such without writing.

Why a high-water mark per sender and not the set of applied keys: a sender's requests are sent in order,
one at a time, so "applied" is "not above the highest applied". That is one row per sender updated in
place, where a set holds a row per request (a week-long run logging every 0.5 s leaves a million) and has
to keep them all to catch a stale copy of an old request that arrives late (a connection a proxy held).

The claim is the first statement of the write transaction. A retry that arrives while the first attempt
is still writing (the client timed out, the server did not) waits on the sender's row (PostgreSQL's row
lock; SQLite has one writer at a time) and, once the first attempt commits, finds it applied before it has
touched a run. If the first attempt fails instead, its claim rolls back with it and the retry applies.

Senders that applied nothing for :data:`RETENTION_US` are deleted when a new sender appears (so rows
accumulate no faster than clients start, and are bounded by the clients active within the retention). A
forgotten sender's next request is simply applied; only a retry of a request committed that long ago, its
answer lost, would be written twice."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from clients.aether.v1 import tracking_pb2 as pb
from clients.errors import InvalidArgument
from control_plane.tracking.tables import SENDER_ID_LENGTH, LogSenderRow

RETENTION_US = 7 * 24 * 3600 * 1_000_000
_SENDER_ID = re.compile(rf"[A-Za-z0-9_.:-]{{1,{SENDER_ID_LENGTH}}}")
_SENDERS = cast(Table, LogSenderRow.__table__)


@dataclass(frozen=True)
class BatchKey:
    sender_id: str
    sequence: int

    @classmethod
    def of(cls, key: pb.LogBatchKey) -> BatchKey:
        """The request's key, validated (INVALID_ARGUMENT naming what is wrong)."""
        if not _SENDER_ID.fullmatch(key.sender_id):
            raise InvalidArgument(
                f"LogBatch key: sender_id {key.sender_id[:80]!r} must be 1-{SENDER_ID_LENGTH} characters "
                "of [A-Za-z0-9_.:-]"
            )
        if key.sequence < 1:
            raise InvalidArgument(f"LogBatch key: sequence must be at least 1, got {key.sequence}")
        return cls(key.sender_id, key.sequence)


def claim(session: Session, key: BatchKey, now_us: int) -> bool:
    """Records ``key`` as applied inside the caller's write transaction; False when its sender already
    applied this sequence or a later one (write nothing then)."""
    statement = _claim_statement(session.get_bind().dialect.name)
    values = {
        "sender_id": key.sender_id,
        "sequence": key.sequence,
        "first_seen_us": now_us,
        "applied_at_us": now_us,
    }
    first_seen_us = session.execute(statement, values).scalar_one_or_none()
    if first_seen_us is None:
        return False
    if first_seen_us == now_us:  # a new sender (first_seen_us is never updated): prune idle ones
        session.execute(delete(_SENDERS).where(_SENDERS.c.applied_at_us < now_us - RETENTION_US))
    return True


@functools.cache
def _claim_statement(dialect: str) -> Any:
    """Inserts the sender or raises its sequence, only when the key's is higher; returns the row's
    ``first_seen_us`` when it did, nothing otherwise. Built once per dialect."""
    statement = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_SENDERS)
    new = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=[_SENDERS.c.sender_id],
        set_={"sequence": new.sequence, "applied_at_us": new.applied_at_us},
        where=_SENDERS.c.sequence < new.sequence,
    ).returning(_SENDERS.c.first_seen_us)
