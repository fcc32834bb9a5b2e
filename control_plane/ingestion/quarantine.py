"""The quarantine store and the per-run counters, on the caller's SQL session (so rows and counters
commit together with whatever else the caller writes).

A run is one ingestion with one source: a batch materialization, a replay, or a stream materializer's
consumer group (one run across restarts). ``record_outcome`` inserts the rejected records and moves the
run's counters in the same transaction, so ``records_in == accepted + quarantined`` after every commit.
Inserting a record key that the run already holds is a no-op (redelivered stream messages).

A batch run that reads a source again (the retry of a run that died, or a rerun of the same file)
quarantines its rejected records again under its own run. ``supersede`` then marks an earlier run's still
pending copy of each (same source, record key and payload) ``superseded``: the queue holds each bad record
once, and replaying every pending record writes it once. Only ``quarantined`` copies are superseded (one a
replay holds, or one already replayed or discarded, is left as it is), and the earlier run keeps counting
the record among its quarantined ones, so every run still adds up.

A replay claims its records before it writes them (``claim``): status ``replaying``, with the claim's
time in ``updated_at_us`` as its token, so that of two replays of the same record only one writes it. A
claim is renewed before each write and must still be held when the replay commits; one that a dead
replay left behind is taken over by the next replay of its records once it is older than the lease.

A batch view's record is committed ``online_pending`` once its row is in the offline store (and counted),
then ``replayed`` once its online value is written. While a replay writes it online the record is held
as a claim is, ``updated_at_us`` the replay's stamp (refused to other replays and discards, taken over
after the lease); a failed online write hands it over at once (``updated_at_us`` 0: no replay holds it).
The next replay of it holds it the same way (``take_online``) and writes only its online value, never its
offline row again; unheld, two replays both wrote it and both reported and audited it. A discard takes
one no replay holds (its view version retired or deleted, its online value not wanted): its row stays
stored offline, and the run that stored it keeps counting it accepted, as a discarded quarantined record
stays counted quarantined, so every run still adds up.

A batch run files its online part (``file_online_part``) in its last chunk's transaction, held by the run
as a replay holds its records, and removes it once its online values are written (``settle_online_part``);
a run killed in between leaves it to a replay, which takes it over after the lease.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from sqlalchemy import and_, delete, insert, or_, select, tuple_, update
from sqlalchemy.orm import Session

from clients.errors import FailedPrecondition, NotFound
from control_plane.ingestion.tables import IngestionRunRow, QuarantineRow

QUARANTINED = "quarantined"
REPLAYING = "replaying"  # claimed by a replay that has not committed yet
REPLAYED = "replayed"
DISCARDED = "discarded"
SUPERSEDED = "superseded"  # a later run of the same source quarantined the same record again
ONLINE_PENDING = "online_pending"  # stored offline and counted by a replay; its online value not yet written
STATUSES = (QUARANTINED, REPLAYING, ONLINE_PENDING, REPLAYED, DISCARDED, SUPERSEDED)
#: How long a replay's claim holds without being renewed. A replay renews it before each group's write
#: (a Kafka publish waits at most ~15 s; a batch group writes its rows once), so only a replay that died
#: lets it lapse. Long, since a replay that took over a claim still held would write the records twice.
CLAIM_LEASE_S = 300.0
#: The largest record id (a 32-bit INTEGER column).
_MAX_ID = 2**31 - 1
#: Values bound per ``IN (...)`` query: PostgreSQL (psycopg) takes at most 65,535 parameters in one
#: statement, and a fully rejected chunk of a Parquet file alone has 65,536 record keys.
IN_LIST_SLICE = 1_000


@dataclass(frozen=True)
class RunSource:
    """Where a run's records come from."""

    run_id: str
    view: str
    version: int
    kind: str  # batch | stream | replay
    source_id: str  # a file path, a stream name, "arrow" for an in-memory table


@dataclass(frozen=True)
class QuarantinedRecord:
    id: int
    run_id: str
    record_key: str
    view: str
    version: int
    source_kind: str
    source_id: str
    payload: str
    reason: str
    status: str
    created_at_us: int
    updated_at_us: int


@dataclass(frozen=True)
class RunCounts:
    run_id: str
    view: str
    version: int
    source_kind: str
    source_id: str
    records_in: int
    accepted: int
    quarantined: int


def now_us() -> int:
    return time.time_ns() // 1000


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
    for part in _slices(wanted):
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
        _rowcount(
            session.execute(
                update(QuarantineRow)
                .where(QuarantineRow.id.in_(part), claimable)
                .values(status=REPLAYING, updated_at_us=stamp)
                .execution_options(synchronize_session=False)
            )
        )
        for part in _slices(wanted)
    )
    if claimed != len(wanted):  # the locks above make this unreachable; never write on a partial claim
        raise FailedPrecondition(
            f"{len(wanted) - claimed} of the records changed while being claimed; nothing was {action}"
        )
    return Claim(list(dict.fromkeys(ids)), stamp, taken_over)


def online_pending(session: Session, ids: Sequence[int], lease_s: float = CLAIM_LEASE_S) -> list[int]:
    """Those of ``ids`` that are ``online_pending`` and held by no live replay, in the given order."""
    lapsed_before = now_us() - int(lease_s * 1_000_000)
    found: set[int] = set()
    for part in _slices(sorted(set(ids))):
        query = select(QuarantineRow.id).where(
            QuarantineRow.id.in_(part),
            QuarantineRow.status == ONLINE_PENDING,
            QuarantineRow.updated_at_us < lapsed_before,
        )
        found.update(session.scalars(query))
    return [record_id for record_id in dict.fromkeys(ids) if record_id in found]


#: The record key of a batch run's online part (one record per run; see ``file_online_part``).
ONLINE_PART_KEY = "online"


def file_online_part(session: Session, source: RunSource, offline_paths: Sequence[str]) -> int:
    """Files, in the caller's transaction (a batch run's last chunk's), the run's online part before it
    is written: one ``online_pending`` record of the run whose payload names the offline files the run
    wrote (its latest row per entity is theirs), held by the run (``updated_at_us`` the returned stamp),
    as a replay holds the records it writes online. A run killed between that commit and its online write
    used to leave its rows stored and counted with no online value and no record of it (re-ingesting
    stored them twice); now the record waits, and a replay takes it over after the lease. The counters do
    not move: the run counted the rows accepted already.

    One record per run, not one per entity: 100,000 entities' rows as JSON payloads took ~2 s to build,
    insert and delete, on a run of 1,000,000 rows that takes ~1.1 s, and as many record ids (a 32-bit
    column) per run; the files hold those rows already."""
    stamp = now_us()
    payload = json.dumps({"offline_files": list(offline_paths)})
    session.execute(
        insert(QuarantineRow),
        [
            {
                "run_id": source.run_id, "record_key": ONLINE_PART_KEY, "view": source.view,
                "version": source.version, "source_kind": source.kind, "source_id": source.source_id,
                "payload": payload, "status": ONLINE_PENDING, "created_at_us": stamp, "updated_at_us": stamp,
                "reason": "online values not written yet: the run's latest row per entity, in its offline"
                " files; a replay writes them",
            }
        ],
    )  # fmt: skip
    return stamp


def settle_online_part(session: Session, run_id: str, stamp: int, error: str | None = None) -> int:
    """Ends the run's hold on its online part (one statement, conditional on the hold's ``stamp``, so a
    replay that took it over keeps it): with no ``error`` the online values are written and the record
    goes; with one it is handed to the next replay at once, saying why. Returns how many records."""
    held_by_run = and_(
        QuarantineRow.run_id == run_id,
        QuarantineRow.record_key == ONLINE_PART_KEY,
        QuarantineRow.status == ONLINE_PENDING,
        QuarantineRow.updated_at_us == stamp,
    )
    if error is None:
        statement: Any = delete(QuarantineRow).where(held_by_run)
    else:
        values = {"updated_at_us": 0, "reason": f"online values not written: {error}"}
        statement = update(QuarantineRow).where(held_by_run).values(**values)
    return _rowcount(session.execute(statement.execution_options(synchronize_session=False)))


def take_online(session: Session, ids: Sequence[int], lease_s: float = CLAIM_LEASE_S) -> Claim:
    """Holds for a replay, in the caller's transaction, those of ``ids`` that are ``online_pending`` and
    held by no live replay (``updated_at_us`` set to the hold's stamp; the status stays), so that of two
    replays of one only the first writes its online value; the others are the caller's to ``claim``.
    Locked in id order first, as ``claim`` does."""
    stamp = now_us()
    lapsed_before = stamp - int(lease_s * 1_000_000)
    free: dict[int, int] = {}
    for part in _slices(sorted(set(ids))):
        query = (
            select(QuarantineRow.id, QuarantineRow.updated_at_us)
            .where(
                QuarantineRow.id.in_(part),
                QuarantineRow.status == ONLINE_PENDING,
                QuarantineRow.updated_at_us < lapsed_before,
            )
            .order_by(QuarantineRow.id)
            .with_for_update()
        )
        free.update((row.id, row.updated_at_us) for row in session.execute(query))
    for part in _slices(sorted(free)):
        session.execute(
            update(QuarantineRow)
            .where(
                QuarantineRow.id.in_(part),
                QuarantineRow.status == ONLINE_PENDING,
                QuarantineRow.updated_at_us < lapsed_before,
            )
            .values(updated_at_us=stamp)
            .execution_options(synchronize_session=False)
        )
    taken_over = sorted(i for i, at in free.items() if at)  # 0: handed over, not a dead replay's
    return Claim([i for i in dict.fromkeys(ids) if i in free], stamp, taken_over)


def _held_online(hold: Claim, part: Sequence[int]) -> Any:
    return and_(
        QuarantineRow.id.in_(part),
        QuarantineRow.status == ONLINE_PENDING,
        QuarantineRow.updated_at_us == hold.stamp,
    )


def free_online(session: Session, hold: Claim, ids: Sequence[int]) -> None:
    """Hands those of ``ids`` that ``hold`` still holds to the next replay at once (their online write
    failed, or the replay did before it)."""
    for part in _slices(sorted(set(ids))):
        session.execute(
            update(QuarantineRow)
            .where(_held_online(hold, part))
            .values(updated_at_us=0)
            .execution_options(synchronize_session=False)
        )


def finish_online(session: Session, hold: Claim, ids: Sequence[int]) -> list[int]:
    """Marks ``replayed`` those of ``ids`` that ``hold`` still holds (their online values are written)
    and returns them; one another replay took over once the hold outlasted the lease is its to mark."""
    marked: list[int] = []
    for part in _slices(sorted(set(ids))):
        query = select(QuarantineRow.id).where(_held_online(hold, part)).with_for_update()
        marked += session.scalars(query)
    set_to = {"status": REPLAYED, "updated_at_us": now_us()}
    for part in _slices(marked):
        session.execute(
            update(QuarantineRow)
            .where(_held_online(hold, part))
            .values(**set_to)
            .execution_options(synchronize_session=False)
        )
    found = set(marked)
    return [i for i in ids if i in found]


def held(session: Session, claim: Claim, ids: Sequence[int]) -> dict[int, QuarantineRow]:
    """The rows of ``ids`` that ``claim`` still holds, locked until the caller's transaction ends."""
    rows: dict[int, QuarantineRow] = {}
    for part in _slices(list(ids)):
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
        _rowcount(
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
        for part in _slices(sorted(claim.ids))
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
            f" (claimed since {since}; a replay that died leaves its claim, which a replay of the records"
            f" takes over {lease_s:g} s after it was last renewed)"
        )
    return "; ".join(reasons)


def _slices(ids: list[int]) -> list[list[int]]:
    """``ids`` in lookups of at most IN_LIST_SLICE, without the ids no record can have: the API's ids are
    uint64 and the column 32 bits, and PostgreSQL refused to compare a larger one (INTERNAL) where
    SQLite answered NOT_FOUND. Left out of the lookup, such an id is NOT_FOUND on both."""
    ids = [record_id for record_id in ids if 0 < record_id <= _MAX_ID]
    return [ids[start : start + IN_LIST_SLICE] for start in range(0, len(ids), IN_LIST_SLICE)]


def _rowcount(result: Any) -> int:
    """Rows an UPDATE matched (a CursorResult's, which ``Session.execute`` does not type as one)."""
    return int(result.rowcount)


def ensure_run(session: Session, source: RunSource) -> IngestionRunRow:
    run = session.get(IngestionRunRow, source.run_id)
    if run is None:
        stamp = now_us()
        run = IngestionRunRow(
            run_id=source.run_id,
            view=source.view,
            version=source.version,
            source_kind=source.kind,
            source_id=source.source_id,
            records_in=0,
            accepted=0,
            quarantined=0,
            started_at_us=stamp,
            updated_at_us=stamp,
        )
        session.add(run)
        session.flush()
    return run


def record_outcome(
    session: Session,
    source: RunSource,
    *,
    accepted: int,
    rejected: pa.Table,
    record_keys: Sequence[str],
) -> int:
    """Quarantines ``rejected`` (validation's rejected table; ``record_keys[i]`` names its row i) and adds
    ``accepted`` plus the newly quarantined records to the run's counters. Returns how many records were
    newly quarantined (keys the run already holds are skipped)."""
    run = ensure_run(session, source)
    keys = list(record_keys)
    existing: set[str] = set()
    for start in range(0, len(keys), IN_LIST_SLICE):
        existing.update(
            session.scalars(
                select(QuarantineRow.record_key).where(
                    QuarantineRow.run_id == source.run_id,
                    QuarantineRow.record_key.in_(keys[start : start + IN_LIST_SLICE]),
                )
            )
        )
    stamp = now_us()
    payloads = rejected.column("payload").to_pylist()
    reasons = rejected.column("reason").to_pylist()
    fresh = [i for i, key in enumerate(keys) if key not in existing]
    session.add_all(
        QuarantineRow(
            run_id=source.run_id,
            record_key=keys[i],
            view=source.view,
            version=source.version,
            source_kind=source.kind,
            source_id=source.source_id,
            payload=payloads[i],
            reason=reasons[i],
            status=QUARANTINED,
            created_at_us=stamp,
            updated_at_us=stamp,
        )
        for i in fresh
    )
    run.records_in += accepted + len(fresh)
    run.accepted += accepted
    run.quarantined += len(fresh)
    run.updated_at_us = stamp
    session.flush()
    return len(fresh)


def supersede(
    session: Session, source: RunSource, record_keys: Sequence[str], payloads: Sequence[str]
) -> int:
    """Marks ``superseded`` the pending records of earlier runs of ``source`` (same view version, kind
    and source id) that are the records just quarantined by ``source.run_id`` again: the same record key
    with the same payload (a file rewritten since holds other records under the same keys). Returns how
    many. Found through the (view, version, source_id, record_key) index: a chunk costs lookups of its
    own keys, not a scan of the view's quarantine."""
    pairs = list(zip(record_keys, payloads, strict=True))
    stamp = now_us()
    superseded = 0
    for start in range(0, len(pairs), IN_LIST_SLICE):
        part = pairs[start : start + IN_LIST_SLICE]
        statement = (
            update(QuarantineRow)
            .where(
                QuarantineRow.source_id == source.source_id,
                QuarantineRow.record_key.in_([key for key, _payload in part]),
                tuple_(QuarantineRow.record_key, QuarantineRow.payload).in_(part),
                QuarantineRow.view == source.view,
                QuarantineRow.version == source.version,
                QuarantineRow.source_kind == source.kind,
                QuarantineRow.run_id != source.run_id,
                # Conditional on the status, so a record a replay has claimed meanwhile is left to it.
                QuarantineRow.status == QUARANTINED,
            )
            .values(status=SUPERSEDED, updated_at_us=stamp)
            .execution_options(synchronize_session=False)
        )
        superseded += _rowcount(session.execute(statement))
    return superseded


def list_quarantined(
    session: Session,
    *,
    view: str = "",
    reason_contains: str = "",
    status: str = QUARANTINED,
    run_id: str = "",
    limit: int = 100,
) -> list[QuarantinedRecord]:
    """Newest first. Empty filters match everything; ``status=""`` lists every status.
    ``reason_contains`` matches its text anywhere in the reason, ignoring the case of ASCII letters, with
    ``%`` and ``_`` matching themselves."""
    query = select(QuarantineRow).order_by(QuarantineRow.id.desc()).limit(limit)
    if view:
        query = query.where(QuarantineRow.view == view)
    if reason_contains:
        # ILIKE (SQLite: lower() on both sides): LIKE ignores case on SQLite but not on PostgreSQL, so
        # the same filter found records on one backend and none on the other.
        query = query.where(QuarantineRow.reason.icontains(reason_contains, autoescape=True))
    if status:
        query = query.where(QuarantineRow.status == status)
    if run_id:
        query = query.where(QuarantineRow.run_id == run_id)
    return [_record(row) for row in session.scalars(query)]


def get_rows(session: Session, ids: Sequence[int]) -> list[QuarantineRow]:
    """The rows of ``ids`` in the given order; NotFound naming the first missing id."""
    rows: dict[int, QuarantineRow] = {}
    for part in _slices(list(ids)):
        query = select(QuarantineRow).where(QuarantineRow.id.in_(part))
        rows.update((row.id, row) for row in session.scalars(query))
    for record_id in ids:
        if record_id not in rows:
            raise NotFound(f"quarantined record {record_id} not found")
    return [rows[record_id] for record_id in ids]


def get_quarantined(session: Session, record_id: int) -> QuarantinedRecord:
    return _record(get_rows(session, [record_id])[0])


def set_status(
    session: Session, rows: Sequence[QuarantineRow], status: str, reason: str | None = None
) -> None:
    stamp = now_us()
    for row in rows:
        row.status = status
        row.updated_at_us = stamp
        if reason is not None:
            row.reason = reason


def run_counts(session: Session, run_id: str) -> RunCounts:
    run = session.get(IngestionRunRow, run_id)
    if run is None:
        raise NotFound(f"ingestion run {run_id!r} not found")
    return counts_of(run)


def list_runs(session: Session, view: str = "", limit: int = 100) -> list[RunCounts]:
    query = select(IngestionRunRow).order_by(IngestionRunRow.started_at_us.desc()).limit(limit)
    if view:
        query = query.where(IngestionRunRow.view == view)
    return [counts_of(run) for run in session.scalars(query)]


def counts_of(run: IngestionRunRow) -> RunCounts:
    return RunCounts(
        run.run_id,
        run.view,
        run.version,
        run.source_kind,
        run.source_id,
        run.records_in,
        run.accepted,
        run.quarantined,
    )


def _record(row: QuarantineRow) -> QuarantinedRecord:
    return QuarantinedRecord(
        row.id,
        row.run_id,
        row.record_key,
        row.view,
        row.version,
        row.source_kind,
        row.source_id,
        row.payload,
        row.reason,
        row.status,
        row.created_at_us,
        row.updated_at_us,
    )
