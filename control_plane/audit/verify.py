"""Checking the hash chain: finds the first entry that was edited, inserted or deleted.

Each entry must have the next sequence number (1, 2, 3 ... without gaps), a ``prev_hash`` equal to the
previous entry's hash, and a ``hash`` equal to the digest of its own fields; the head row must name the
last entry. That catches an edited field (the hash no longer matches), a deleted entry (a gap in the
sequence, or a head that names a missing entry when the newest ones were removed) and an inserted one
(a duplicate is impossible, so it shows up as a broken link or as an entry beyond the head).

The limit of any unkeyed chain: someone who can write the database and recomputes every hash after the
change, head included, produces a chain that verifies. Exported JSON lines kept elsewhere (or a head hash
written down) pin the history up to that point: a rewritten chain no longer matches them."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from control_plane.audit.chain import GENESIS_HASH, expected_hash
from control_plane.audit.log import HEAD_ROW_ID
from control_plane.audit.query import ENTRY_COLUMNS, entry_of
from control_plane.audit.tables import AuditEntryRow, AuditHeadRow
from control_plane.db.engine import read_session

_BATCH = 1000


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    #: How many entries were checked (all of them when ``ok``).
    entries_checked: int
    #: The sequence number of the newest intact entry (0 for an empty log).
    head_seq: int
    head_hash: str
    #: The first sequence number at which the chain breaks (None when ``ok``).
    first_bad_seq: int | None = None
    reason: str = ""


def verify_chain(sessions: sessionmaker[Session]) -> VerifyResult:
    """Walks the whole log in one read snapshot (so concurrent appends do not look like tampering)."""
    with read_session(sessions) as session:
        return _verify(session)


def _verify(session: Session) -> VerifyResult:
    head = session.execute(
        select(AuditHeadRow.seq, AuditHeadRow.hash).where(AuditHeadRow.id == HEAD_ROW_ID)
    ).one_or_none()
    head_seq, head_hash = (0, GENESIS_HASH) if head is None else (int(head.seq), str(head.hash))
    expected_seq, prev_hash, checked = 1, GENESIS_HASH, 0
    before_last_hash = GENESIS_HASH  # the hash before prev_hash

    def broken(seq: int, reason: str) -> VerifyResult:
        return VerifyResult(False, checked, expected_seq - 1, prev_hash, seq, reason)

    last_seq = 0
    while True:
        rows = session.execute(
            select(*ENTRY_COLUMNS)
            .where(AuditEntryRow.seq > last_seq)
            .order_by(AuditEntryRow.seq)
            .limit(_BATCH)
        ).all()
        for row in rows:
            entry = entry_of(row)
            if entry.seq != expected_seq:
                if entry.seq > expected_seq:
                    return broken(
                        expected_seq, f"entry {expected_seq} is missing (next entry is {entry.seq})"
                    )
                return broken(entry.seq, f"entry {entry.seq} is out of sequence (expected {expected_seq})")
            if entry.seq > head_seq:
                return broken(entry.seq, f"entry {entry.seq} lies beyond the recorded head {head_seq}")
            if entry.prev_hash != prev_hash:
                return broken(
                    entry.seq, f"entry {entry.seq} does not link to entry {entry.seq - 1} (prev_hash differs)"
                )
            if entry.damaged:
                return broken(entry.seq, f"entry {entry.seq} was modified ({entry.damaged})")
            if entry.hash != expected_hash(entry):
                return broken(
                    entry.seq, f"entry {entry.seq} was modified (its hash does not match its contents)"
                )
            checked += 1
            before_last_hash, prev_hash = prev_hash, entry.hash
            expected_seq += 1
        if len(rows) < _BATCH:
            break
        last_seq = rows[-1].seq
    if expected_seq - 1 != head_seq:
        return broken(
            expected_seq, f"entries {expected_seq}..{head_seq} are missing (the head names entry {head_seq})"
        )
    if prev_hash != head_hash and head_seq == 0:
        return VerifyResult(False, 0, 0, GENESIS_HASH, 1, "the head row of an empty log was altered")
    if prev_hash != head_hash:
        # The last entry links and hashes right but is not the one the head recorded: it was replaced.
        reason = f"entry {head_seq} differs from the recorded head hash (it was replaced)"
        return VerifyResult(False, checked - 1, head_seq - 1, before_last_hash, head_seq, reason)
    return VerifyResult(True, checked, head_seq, head_hash)
