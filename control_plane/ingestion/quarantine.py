"""The quarantine store and the per-run counters, on the caller's SQL session (so rows and counters
commit together with whatever else the caller writes).

A run is one ingestion with one source: a batch materialization, a replay, or a stream materializer's
consumer group (one run across restarts). ``record_outcome`` inserts the rejected records and moves the
run's counters in the same transaction, so ``records_in == accepted + quarantined`` after every commit.
A replay of a streaming view's records publishes them to the view's stream and counts them
``published``, not in ``records_in``: the stream run that reads them back counts each in, accepted or
quarantined, and summed over the runs every record is accepted once (the replay run also counting
them accepted made each replayed record two).
Inserting a record key that the run already holds is a no-op (redelivered stream messages).

A batch run that reads a source again (the retry of a run that died, or a rerun of the same file)
quarantines its rejected records again under its own run. ``supersede`` then marks an earlier run's still
pending copy of each (same source, record key and payload) ``superseded``: the queue holds each bad record
once, and replaying every pending record writes it once. Only ``quarantined`` copies are superseded (one a
replay holds, or one already replayed or discarded, is left as it is), and the earlier run keeps counting
the record among its quarantined ones, so every run still adds up. Runs of one source running at once
supersede one at a time (a lock on the source, held to the chunk's commit), so each sees the other's
copies: one pending copy per record remains, on PostgreSQL as on SQLite.

A replay claims its records before it writes them (``claims.py``).

``online_pending`` records (a batch record stored offline and counted, its online value not yet written)
and their holds are ``online_pending.py``'s; a claim refuses them as it refuses claimed records.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from sqlalchemy import func, insert, select, tuple_, update
from sqlalchemy.orm import Session

from clients.errors import InvalidArgument, NotFound
from control_plane.ingestion.tables import SOURCE_LENGTH, IngestionRunRow, QuarantineRow

QUARANTINED = "quarantined"
REPLAYING = "replaying"  # claimed by a replay that has not committed yet
REPLAYED = "replayed"
DISCARDED = "discarded"
SUPERSEDED = "superseded"  # a later run of the same source quarantined the same record again
ONLINE_PENDING = "online_pending"  # stored offline and counted; its online value not yet written
STATUSES = (QUARANTINED, REPLAYING, ONLINE_PENDING, REPLAYED, DISCARDED, SUPERSEDED)
#: The largest record id (a 64-bit column, ``ROW_ID``).
_MAX_ID = 2**63 - 1
#: Values bound per ``IN (...)`` query: PostgreSQL (psycopg) takes at most 65,535 parameters in one
#: statement, and a fully rejected chunk of a Parquet file alone has 65,536 record keys.
IN_LIST_SLICE = 1_000


def bounded_id(text: str, limit: int) -> str:
    """``text`` when it fits a column of ``limit`` characters; else its start, ``~`` and 16 hex digits
    of its SHA-256, ``limit`` characters in all. For identifiers the control plane derives (a stream
    run's id from its stream, group and view names): the same names always give the same id, and two
    that share a long start still differ. A longer one failed every SQL write on PostgreSQL, which
    enforces VARCHAR lengths."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{text[: limit - len(digest) - 1]}~{digest}"


def check_source_length(source_id: str, field: str) -> None:
    """Refuses, before anything is written, a caller-given source that the runs' and quarantine's
    ``source_id`` column cannot hold: on PostgreSQL the run's first SQL transaction failed after its
    chunk was written to the offline store, leaving rows stored and never counted."""
    if len(source_id) > SOURCE_LENGTH:
        raise InvalidArgument(
            f"{field}: {len(source_id)} characters, longer than the {SOURCE_LENGTH} an ingestion run's"
            " source may have"
        )


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
    published: int = 0  # a streaming replay's records left for the stream run to count


def now_us() -> int:
    return time.time_ns() // 1000


def id_slices(ids: list[int]) -> list[list[int]]:
    """``ids`` in lookups of at most IN_LIST_SLICE, without the ids no record can have: the API's ids are
    uint64 and the column a signed 64 bits, and PostgreSQL refused to compare a larger one (INTERNAL)
    where SQLite answered NOT_FOUND. Left out of the lookup, such an id is NOT_FOUND on both."""
    ids = [record_id for record_id in ids if 0 < record_id <= _MAX_ID]
    return [ids[start : start + IN_LIST_SLICE] for start in range(0, len(ids), IN_LIST_SLICE)]


def rowcount(result: Any) -> int:
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
            published=0,
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
    if fresh:
        # One executemany of plain rows (Core): building an ORM object per record took most of the time of
        # quarantining a large rejected chunk (25 s of 33 for 65,536 records on PostgreSQL).
        common = {
            "run_id": source.run_id,
            "view": source.view,
            "version": source.version,
            "source_kind": source.kind,
            "source_id": source.source_id,
            "status": QUARANTINED,
            "created_at_us": stamp,
            "updated_at_us": stamp,
        }
        rows = [
            {**common, "record_key": keys[i], "payload": payloads[i], "reason": reasons[i]} for i in fresh
        ]
        session.execute(insert(QuarantineRow), rows)
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
    own keys, not a scan of the view's quarantine.

    Two runs of one source whose chunk transactions overlap each see only the other's committed copies,
    so each left the other's copy pending (three concurrent reruns of a file: 54,000 pending copies of
    30,000 bad records). The caller's transaction therefore holds the source's lock (``_lock_source``)
    from here to its commit: a second run's supersede waits for it, then sees and supersedes its copies."""
    pairs = list(zip(record_keys, payloads, strict=True))
    if pairs:
        _lock_source(session, source)
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
        superseded += rowcount(session.execute(statement))
    return superseded


def _lock_source(session: Session, source: RunSource) -> None:
    """Serializes, until the caller's transaction ends, the supersedes of one source (view version, kind
    and source id). SQLite's write transactions hold the whole database's lock already; PostgreSQL gets
    a transaction-scoped advisory lock keyed by the source, since the rows to lock are the other run's
    uncommitted inserts, which no row lock reaches. A chunk takes only this one lock before the audit
    log's head row, so two chunks never wait on each other in crossing orders."""
    if session.get_bind().dialect.name != "postgresql":
        return
    name = f"aether.quarantine:{source.view}:{source.version}:{source.kind}:{source.source_id}"
    digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    session.execute(select(func.pg_advisory_xact_lock(int.from_bytes(digest, "big", signed=True))))


#: The longest ``reason_contains`` filter, in characters. SQLite refuses a LIKE pattern over 50,000 bytes
#: once it meets a row ("LIKE or GLOB pattern too complex"), and such a filter came back INTERNAL; a
#: reason filter is a phrase to look for, far below this.
REASON_FILTER_LENGTH = 1000

#: ``zone_weather@1``: the form a listing prints (names hold no ``@``; versions are uint32, ten digits).
_VIEW_AT_VERSION = re.compile(r"(?P<view>[^\s:@]+)@(?P<version>[0-9]{1,10})")


def list_quarantined(
    session: Session,
    *,
    view: str = "",
    reason_contains: str = "",
    status: str = QUARANTINED,
    run_id: str = "",
    limit: int = 100,
    before_id: int = 0,
) -> list[QuarantinedRecord]:
    """Newest first (from the one before ``before_id``, if given). Empty filters match everything;
    ``status=""`` lists every status. ``view`` is a view name (every version) or ``NAME@VERSION``, as
    listings show a record's view.
    ``reason_contains`` matches its text anywhere in the reason, ignoring the case of ASCII letters, with
    ``%`` and ``_`` matching themselves, at most ``REASON_FILTER_LENGTH`` characters."""
    if len(reason_contains) > REASON_FILTER_LENGTH:
        raise InvalidArgument(
            f"reason_contains: {len(reason_contains)} characters; a reason filter holds at most"
            f" {REASON_FILTER_LENGTH} characters"
        )
    query = select(QuarantineRow).order_by(QuarantineRow.id.desc()).limit(limit)
    if view:
        # NAME@VERSION is split here, not by the caller: filtered after a page was read, a version
        # would leave pages short and listings cut before their limit.
        at_version = _VIEW_AT_VERSION.fullmatch(view)
        if at_version is None:
            query = query.where(QuarantineRow.view == view)
        else:
            query = query.where(
                QuarantineRow.view == at_version["view"], QuarantineRow.version == int(at_version["version"])
            )
    if reason_contains:
        # ILIKE (SQLite: lower() on both sides): LIKE ignores case on SQLite but not on PostgreSQL, so
        # the same filter found records on one backend and none on the other.
        query = query.where(QuarantineRow.reason.icontains(reason_contains, autoescape=True))
    if status:
        query = query.where(QuarantineRow.status == status)
    if run_id:
        query = query.where(QuarantineRow.run_id == run_id)
    if before_id:
        query = query.where(QuarantineRow.id < before_id)
    return [_record(row) for row in session.scalars(query)]


def get_rows(session: Session, ids: Sequence[int]) -> list[QuarantineRow]:
    """The rows of ``ids`` in the given order; NotFound naming the first missing id."""
    rows: dict[int, QuarantineRow] = {}
    for part in id_slices(list(ids)):
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
        run.published,
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
