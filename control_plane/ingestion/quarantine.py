"""The quarantine store and the per-run counters, on the caller's SQL session (so rows and counters
commit together with whatever else the caller writes).

A run is one ingestion with one source: a batch materialization, a replay, or a stream materializer's
consumer group (one run across restarts). ``record_outcome`` inserts the rejected records and moves the
run's counters in the same transaction, so ``records_in == accepted + quarantined`` after every commit.
Inserting a record key that the run already holds is a no-op (redelivered stream messages).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
from sqlalchemy import select
from sqlalchemy.orm import Session

from clients.errors import NotFound
from control_plane.ingestion.tables import IngestionRunRow, QuarantineRow

QUARANTINED = "quarantined"
REPLAYED = "replayed"
DISCARDED = "discarded"
STATUSES = (QUARANTINED, REPLAYED, DISCARDED)
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


def list_quarantined(
    session: Session,
    *,
    view: str = "",
    reason_contains: str = "",
    status: str = QUARANTINED,
    run_id: str = "",
    limit: int = 100,
) -> list[QuarantinedRecord]:
    """Newest first. Empty filters match everything; ``status=""`` lists every status."""
    query = select(QuarantineRow).order_by(QuarantineRow.id.desc()).limit(limit)
    if view:
        query = query.where(QuarantineRow.view == view)
    if reason_contains:
        query = query.where(QuarantineRow.reason.contains(reason_contains, autoescape=True))
    if status:
        query = query.where(QuarantineRow.status == status)
    if run_id:
        query = query.where(QuarantineRow.run_id == run_id)
    return [_record(row) for row in session.scalars(query)]


def get_rows(session: Session, ids: Sequence[int]) -> list[QuarantineRow]:
    """The rows of ``ids`` in the given order; NotFound naming the first missing id."""
    rows: dict[int, QuarantineRow] = {}
    for start in range(0, len(ids), IN_LIST_SLICE):
        query = select(QuarantineRow).where(QuarantineRow.id.in_(ids[start : start + IN_LIST_SLICE]))
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
