"""A replay's claim on the quarantined records it is about to write, in the caller's transaction.

A replay claims its records before it writes them (:func:`claim`): status ``replaying``, with the claim's
time in ``updated_at_us`` as its token, so that of two replays of the same record only one writes it. A
claim is renewed before each write (:func:`renew`) and must still be held when the replay commits
(:func:`held`); one that a dead replay left behind is taken over by the next replay of its records once
it is older than the lease. A replay that fails before writing hands its records back (:func:`release`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from clients.errors import FailedPrecondition, NotFound
from control_plane.ingestion.quarantine import (
    ONLINE_PENDING,
    QUARANTINED,
    REPLAYING,
    id_slices,
    now_us,
    rowcount,
)
from control_plane.ingestion.tables import QuarantineRow

#: How long a replay's claim holds without being renewed. A replay renews it before each group's write
#: (a Kafka publish waits at most ~15 s; a batch group writes its rows once), so only a replay that died
#: lets it lapse. Long, since a replay that took over a claim still held would write the records twice.
CLAIM_LEASE_S = 300.0


class ClaimLost(FailedPrecondition):
    """A replay's claim on records it wrote lapsed before its commit and another replay took them over;
    raised before the commit writes anything."""


@dataclass
class Claim:
    """A replay's hold on its records: each is ``replaying`` with ``updated_at_us == stamp``. No other
    writer sets that pair (a renewal or a takeover moves the time on), so it names this replay as an
    owner column would. ``ids`` are the records still held: the replay drops those it commits."""

    ids: list[int]
    stamp: int
    taken_over: list[int]  # records whose lapsed claim (a dead replay's) this one took over


def claim(
    session: Session,
    ids: Sequence[int],
    lease_s: float = CLAIM_LEASE_S,
    action: str = "replayed",
    online_pending: bool = False,
) -> Claim:
    """Claims ``ids`` for a replay, all or none, in the caller's transaction: each must be quarantined,
    or ``replaying`` under a claim older than ``lease_s``, or with ``online_pending`` (a discard) one that
    is ``online_pending`` and held by no live replay. NotFound names a missing id; FailedPrecondition
    every record that is replayed, discarded or held by a live claim, ending "nothing was ``action``"
    (the caller's transaction, rolled back, then claims nothing). A discard claims and finishes its
    records in one transaction, so it and a replay never both take a record.

    The rows are locked in id order first (PostgreSQL: a second claim of an overlapping set waits, then
    reads the first one's committed claim, and two claims never lock in crossing orders; SQLite: the
    write transaction holds the database already), and the update is conditional on the status anyway,
    so a claim is never taken from under another writer."""
    wanted = sorted(set(ids))
    stamp = now_us()
    lapsed_before = stamp - int(lease_s * 1_000_000)
    states: dict[int, tuple[str, int]] = {}
    for part in id_slices(wanted):
        query = (
            select(QuarantineRow.id, QuarantineRow.status, QuarantineRow.updated_at_us)
            .where(QuarantineRow.id.in_(part))
            .order_by(QuarantineRow.id)
            .with_for_update()
        )
        states.update((row.id, (row.status, row.updated_at_us)) for row in session.execute(query))
    for record_id in ids:
        if record_id not in states:
            raise NotFound(f"quarantined record {record_id} not found")
    taken_over = [i for i, (status, at) in states.items() if status == REPLAYING and at < lapsed_before]
    # An online_pending record a live replay writes online is held as a claimed one is (see _refusal).
    stored = [
        i
        for i, (status, at) in states.items()
        if online_pending and status == ONLINE_PENDING and at < lapsed_before
    ]
    refused = {
        i: state
        for i, state in states.items()
        if state[0] != QUARANTINED and i not in taken_over and i not in stored
    }
    if refused:
        raise FailedPrecondition(f"{_refusal(refused, lease_s, lapsed_before)}; nothing was {action}")
    statuses = (REPLAYING, ONLINE_PENDING) if online_pending else (REPLAYING,)
    claimable = or_(
        QuarantineRow.status == QUARANTINED,
        and_(QuarantineRow.status.in_(statuses), QuarantineRow.updated_at_us < lapsed_before),
    )
    claimed = sum(
        rowcount(
            session.execute(
                update(QuarantineRow)
                .where(QuarantineRow.id.in_(part), claimable)
                .values(status=REPLAYING, updated_at_us=stamp)
                .execution_options(synchronize_session=False)
            )
        )
        for part in id_slices(wanted)
    )
    if claimed != len(wanted):  # the locks above make this unreachable; never write on a partial claim
        raise FailedPrecondition(
            f"{len(wanted) - claimed} of the records changed while being claimed; nothing was {action}"
        )
    return Claim(list(dict.fromkeys(ids)), stamp, taken_over)


def held(session: Session, claim: Claim, ids: Sequence[int]) -> dict[int, QuarantineRow]:
    """The rows of ``ids`` that ``claim`` still holds, locked until the caller's transaction ends."""
    rows: dict[int, QuarantineRow] = {}
    for part in id_slices(list(ids)):
        query = (
            select(QuarantineRow)
            .where(
                QuarantineRow.id.in_(part),
                QuarantineRow.status == REPLAYING,
                QuarantineRow.updated_at_us == claim.stamp,
            )
            .order_by(QuarantineRow.id)
            .with_for_update()
        )
        rows.update((row.id, row) for row in session.scalars(query))
    return rows


def renew(session: Session, claim: Claim) -> int:
    """Moves the claim's time to now on every record it holds and returns the new stamp (the caller sets
    it on the claim once committed). FailedPrecondition, renewing nothing, when another replay took
    some of them over, as it may once this claim is older than the lease."""
    rows = held(session, claim, claim.ids)
    lost = [record_id for record_id in claim.ids if record_id not in rows]
    if lost:
        raise FailedPrecondition(
            f"quarantined records {lost} were taken over by another replay (this replay's claim went"
            " unrenewed past its lease) or changed since; this replay does not write them"
        )
    stamp = max(now_us(), claim.stamp + 1)
    for row in rows.values():
        row.updated_at_us = stamp
    session.flush()
    return stamp


def release(session: Session, claim: Claim) -> int:
    """Hands the records the claim still holds back to the quarantine (a replay that failed before
    writing them); returns how many. Records another replay took over are left to it."""
    stamp = now_us()
    return sum(
        rowcount(
            session.execute(
                update(QuarantineRow)
                .where(
                    QuarantineRow.id.in_(part),
                    QuarantineRow.status == REPLAYING,
                    QuarantineRow.updated_at_us == claim.stamp,
                )
                .values(status=QUARANTINED, updated_at_us=stamp)
                .execution_options(synchronize_session=False)
            )
        )
        for part in id_slices(sorted(claim.ids))
    )


def _refusal(refused: dict[int, tuple[str, int]], lease_s: float, lapsed_before: int) -> str:
    """Why records cannot be claimed: finished ones by their status, claimed ones with their claim (an
    ``online_pending`` one a live replay writes online is claimed too)."""
    refused = {
        i: (REPLAYING if status == ONLINE_PENDING and at >= lapsed_before else status, at)
        for i, (status, at) in refused.items()
    }
    reasons = [
        f"quarantined record {record_id} is {status}, not quarantined"
        for record_id, (status, _at) in sorted(refused.items())
        if status != REPLAYING
    ]
    claimed = sorted((at, record_id) for record_id, (status, at) in refused.items() if status == REPLAYING)
    if claimed:
        since = datetime.fromtimestamp(claimed[0][0] / 1e6, UTC).isoformat(timespec="seconds")
        reasons.append(
            f"quarantined records {sorted(i for _at, i in claimed)} are being replayed by another replay"
            f" (or written online by the batch run that filed them; claimed since {since}; a replay or run"
            f" that died leaves its claim, which a replay of the records takes over {lease_s:g} s after it"
            " was last renewed)"
        )
    return "; ".join(reasons)
