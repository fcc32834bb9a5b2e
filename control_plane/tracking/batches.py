"""``LogBatch``: metric points, parameters, tags and run ends of many runs written in one transaction.

The request is validated completely before the transaction starts (so a bad value costs no write lock).
Then every kind of row goes in one statement for the whole request, whatever the number of runs: the new
runs, their parameters and tags, the chunk rows, the (run, key) summaries, the status changes; and every
audit entry (one per created run, per batch that adds parameters or changes tags, naming only those, and
per status change; a part that changes nothing has none) is appended by one
:func:`~control_plane.audit.log.record_many` at the end. A batch that starts and ends 50 runs thus costs
about ten statements, not a few hundred (one audit append alone costs ~1-2 ms of statement overhead).
The runs whose parameters, tags or status a request changes are locked first, so that their size check
sees every concurrent writer's values."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from clients.aether.v1 import tracking_pb2 as pb
from clients.errors import AlreadyExists, InvalidArgument, NotFound
from control_plane.audit.log import AuditEvent, record_many
from control_plane.tracking.metrics import Series, Summary, insert_chunks, upsert_summaries
from control_plane.tracking.records import (
    TERMINAL,
    check_name,
    check_stored_values,
    check_time_us,
    check_values,
    end_time_of,
    now_us,
    refuse_ended,
    status_name,
)
from control_plane.tracking.run_size import check_run_message
from control_plane.tracking.tables import ExperimentRow, ParamRow, RunRow, TagRow

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
# Core tables: an ORM-enabled bulk statement inspects every row's values in Python first.
_RUNS = cast(Table, RunRow.__table__)
_PARAMS = cast(Table, ParamRow.__table__)
_TAGS = cast(Table, TagRow.__table__)
_END_RUNS = (
    update(_RUNS)
    .where(_RUNS.c.id == bindparam("pk"))
    .values(status=bindparam("new_status"), end_time_us=bindparam("new_end_time_us"))
)


@dataclass(frozen=True)
class RunStartData:
    experiment_id: str
    name: str
    params: dict[str, str]
    tags: dict[str, str]
    start_time_us: int


@dataclass(frozen=True)
class PreparedBatch:
    run_id: str
    start: RunStartData | None
    series: list[Series]
    params: dict[str, str]
    tags: dict[str, str]
    end_status: str | None
    end_time_us: int


def prepare(batches: Sequence[pb.RunBatch]) -> list[PreparedBatch]:
    """Validates and converts every batch (INVALID_ARGUMENT naming the metric, parameter or tag)."""
    received_us = now_us()
    prepared = []
    for batch in batches:
        if not batch.run_id:
            raise InvalidArgument("a run batch needs a run_id")
        series = [Series.of(m.key, m.values, m.steps, m.timestamps_us, received_us) for m in batch.metrics]
        end = _end_status(batch) if batch.HasField("end") else None
        prepared.append(
            PreparedBatch(
                run_id=batch.run_id,
                start=_start_of(batch, received_us) if batch.HasField("start") else None,
                series=series,
                params=check_values(batch.params, "parameter"),
                tags=check_values(batch.tags, "tag"),
                end_status=end,
                end_time_us=check_time_us(batch.end.end_time_us, f"run {batch.run_id!r}: end_time_us"),
            )
        )
    return prepared


def _end_status(batch: pb.RunBatch) -> str:
    """The status a batch's RunEnd ends its run with: a terminal one. RUNNING was taken, and reopened an
    ended run, its end time and duration gone; reopening is not what ending a run means."""
    status = status_name(batch.end.status)
    if status not in TERMINAL:
        raise InvalidArgument(
            f"run {batch.run_id!r}: RunEnd status {status} does not end a run;"
            " give FINISHED, FAILED or KILLED"
        )
    return status


def _start_of(batch: pb.RunBatch, received_us: int) -> RunStartData:
    if not _RUN_ID.fullmatch(batch.run_id):
        raise InvalidArgument(f"run id {batch.run_id!r} of a started run must be 32 lowercase hex digits")
    start = batch.start
    if not start.experiment_id:
        raise InvalidArgument(f"run {batch.run_id!r}: its RunStart needs an experiment_id")
    return RunStartData(
        experiment_id=start.experiment_id,
        name=check_name(start.name, "run") if start.name else batch.run_id[:8],
        params=check_values(start.params, "parameter"),
        tags=check_values(start.tags, "tag"),
        start_time_us=check_time_us(start.start_time_us, f"run {batch.run_id!r}: start_time_us")
        or received_us,
    )


@dataclass
class _RunState:
    """A run of the batch as stored (status and end time kept current as the batch changes them)."""

    pk: int
    run_id: str
    status: str
    end_time_us: int
    start_time_us: int


@dataclass(frozen=True)
class _Created:
    """A run this request creates: parameters and tags to insert, and what its audit entry says."""

    start: RunStartData
    experiment_name: str


def write(session: Session, batches: Sequence[PreparedBatch], actor: str, *, keep_ended: bool = False) -> int:
    """Writes prepared batches inside the caller's write transaction; returns the points written. With
    ``keep_ended`` (the caller is a job's token), a request naming a run that has ended raises
    FAILED_PRECONDITION (:class:`~control_plane.tracking.records.RunEnded`), checked on the rows read
    (and, for every run the request writes to, locked) below, before anything of the request is written:
    a job token's run is ended by the control plane from how the job ended, and the token (which outlives
    the job) may neither rewrite that verdict nor add to the ended run. A status change committed while
    this request waited for the run's lock is what the check sees, so a write racing the run's end is
    either wholly in before it or wholly refused. No query is added: the rows are read anyway."""
    created = _create_started(session, batches)
    wanted = sorted({batch.run_id for batch in batches})
    # Ended runs are locked here too, not first by the UPDATE that ends them: that comes after the
    # batch's summary rows, and waiting there on a writer that holds the run and waits on those rows
    # would be a deadlock.
    changed = {
        b.run_id for b in batches if b.params or b.tags or b.end_status is not None or any(map(len, b.series))
    }
    runs = _read_runs(session, sorted(changed), lock=True)
    runs |= _read_runs(session, [run_id for run_id in wanted if run_id not in changed], lock=False)
    if missing := [run_id for run_id in wanted if run_id not in runs]:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise NotFound(f"run {missing[0]!r} not found{more}")
    if keep_ended:
        _refuse_ended(batches, runs, actor)
    events = _insert_start_values(session, created, runs, actor)
    points = _write_points(session, batches, runs)
    events += _write_changes(session, batches, runs, actor)
    # Checked on what is stored once written: a run's parameters and tags grow over many requests.
    grown = {run_id for run_id in created if created[run_id].start.params or created[run_id].start.tags}
    grown |= {batch.run_id for batch in batches if batch.params or batch.tags}
    check_stored_values(session, {runs[run_id].pk: run_id for run_id in grown})
    # And the whole message (a new metric key adds a summary for good), on every run the request grew.
    grown |= {batch.run_id for batch in batches if any(map(len, batch.series))}
    check_run_message(session, {runs[run_id].pk: run_id for run_id in grown})
    record_many(session, events)  # last: the audit head is the last lock taken
    return points


def _refuse_ended(batches: Sequence[PreparedBatch], runs: dict[str, _RunState], actor: str) -> None:
    """FAILED_PRECONDITION when a batch names a run that has ended (status read under the lock)."""
    for batch in batches:
        run = runs[batch.run_id]
        write = f"LogBatch with RunEnd {batch.end_status}" if batch.end_status is not None else "LogBatch"
        refuse_ended(run.run_id, run.status, actor, write)


def _read_runs(session: Session, run_ids: Sequence[str], *, lock: bool) -> dict[str, _RunState]:
    """The stored state of runs ``run_ids``, by run id (those that exist). With ``lock``, their rows are
    locked to the end of the transaction (``FOR UPDATE``, in run id order, so that concurrent requests
    lock in one order), as every write that changes a run's parameters, tags, status or artifacts locks
    it first (:meth:`~control_plane.tracking.store.TrackingStore.log_artifact` too):
    on PostgreSQL (READ COMMITTED) the size check otherwise read the run without what concurrent writers
    had written and not yet committed, and three concurrent batches each under the per-run limit stored a
    run too large ever to be read again. SQLite's write lock already serializes writers (SQLAlchemy
    leaves ``FOR UPDATE`` out there). Batches of metric points lock the run too: a new key grows its
    message (``run_size``), and two batches each adding keys would otherwise both pass the size check on
    what the other had not committed. Only a batch with nothing to write leaves the run unlocked."""
    if not run_ids:
        return {}
    query = select(
        _RUNS.c.id, _RUNS.c.run_id, _RUNS.c.status, _RUNS.c.end_time_us, _RUNS.c.start_time_us
    ).where(_RUNS.c.run_id.in_(run_ids))
    if lock:
        query = query.order_by(_RUNS.c.run_id).with_for_update()
    return {
        row.run_id: _RunState(row.id, row.run_id, row.status, row.end_time_us, row.start_time_us)
        for row in session.execute(query)
    }


def _create_started(session: Session, batches: Sequence[PreparedBatch]) -> dict[str, _Created]:
    """Inserts the runs that batches start (one multi-row statement), skipping those that exist; returns
    the new ones (their parameters and tags are written once their keys are known)."""
    starts = {batch.run_id: batch.start for batch in batches if batch.start is not None}
    if not starts:
        return {}
    existing = _existing_runs(session, starts)
    new = {run_id: start for run_id, start in starts.items() if run_id not in existing}
    if not new:
        return {}
    experiments = {
        row.experiment_id: row
        for row in session.execute(
            select(ExperimentRow.id, ExperimentRow.experiment_id, ExperimentRow.name).where(
                ExperimentRow.experiment_id.in_(sorted({start.experiment_id for start in new.values()}))
            )
        )
    }
    for start in new.values():
        if start.experiment_id not in experiments:
            raise NotFound(f"experiment id {start.experiment_id!r} not found")
    inserted = set(
        session.scalars(
            _insert_new(session, _RUNS, ("run_id",)),
            [
                {
                    "run_id": run_id, "experiment_pk": experiments[start.experiment_id].id,
                    "name": start.name, "status": "RUNNING", "start_time_us": start.start_time_us,
                    "end_time_us": 0,
                }
                for run_id, start in sorted(new.items())  # one lock order for concurrent starts
            ],
        )
    )  # fmt: skip
    if raced := {run_id: new[run_id] for run_id in new if run_id not in inserted}:
        # PostgreSQL: another request started these runs after the check above and committed while
        # this insert waited; they are existing runs now, with the same check.
        _existing_runs(session, raced)
    return {  # in request order, which the audit entries follow
        run_id: _Created(start, experiments[start.experiment_id].name)
        for run_id, start in new.items()
        if run_id in inserted
    }


def _existing_runs(session: Session, starts: dict[str, RunStartData]) -> set[str]:
    """Which of the started runs exist; ALREADY_EXISTS when one exists in another experiment."""
    existing = dict(
        session.execute(
            select(RunRow.run_id, ExperimentRow.experiment_id)
            .join(ExperimentRow, ExperimentRow.id == RunRow.experiment_pk)
            .where(RunRow.run_id.in_(sorted(starts)))
        ).all()
    )
    for run_id, experiment_id in existing.items():
        if experiment_id != starts[run_id].experiment_id:
            raise AlreadyExists(f"run {run_id!r} already exists in another experiment")
    return set(existing)


def _insert_start_values(
    session: Session, created: dict[str, _Created], runs: dict[str, _RunState], actor: str
) -> list[AuditEvent]:
    """The parameters and tags of the runs just created (one statement each); returns their "create"
    audit events."""
    for table, attribute in ((_PARAMS, "params"), (_TAGS, "tags")):
        rows = [
            {"run_pk": runs[run_id].pk, "key": key, "value": value}
            for run_id, new in created.items()
            for key, value in getattr(new.start, attribute).items()
        ]
        if rows:
            session.execute(insert(table), rows)
    return [
        AuditEvent(
            actor=actor, action="create", object_type="run", object_id=run_id, before=None,
            after={
                "experiment": new.experiment_name, "name": new.start.name, "params": new.start.params,
                "tags": new.start.tags,
            },
        )
        for run_id, new in created.items()
    ]  # fmt: skip


def _write_points(session: Session, batches: Sequence[PreparedBatch], runs: dict[str, _RunState]) -> int:
    """All chunk rows in one insert, all (run, key) summaries in one upsert; returns the points."""
    chunks: list[dict[str, object]] = []
    summaries: dict[tuple[int, str], Summary] = {}
    points = 0
    for batch in batches:
        run_pk = runs[batch.run_id].pk
        for series in batch.series:
            if not len(series):
                continue
            chunks.append({"run_pk": run_pk, **series.chunk_columns()})
            summary = Summary.of(series)
            previous = summaries.get((run_pk, series.key))
            summaries[(run_pk, series.key)] = previous.merge(summary) if previous else summary
            points += len(series)
    insert_chunks(session, chunks)
    upsert_summaries(session, summaries)
    return points


def _write_changes(
    session: Session, batches: Sequence[PreparedBatch], runs: dict[str, _RunState], actor: str
) -> list[AuditEvent]:
    """New parameters, changed tags and status changes of every batch, one statement per kind; returns one
    audit event per batch whose parameters or tags changed and one per status change, in batch order. A
    part that changes nothing (a tag re-sent with its value, an ended run's status and end time repeated)
    writes nothing and appends no entry, as an UpdateRun that changes nothing
    (:func:`~control_plane.tracking.records.set_status`)."""
    changing = [batch for batch in batches if batch.params or batch.tags or batch.end_status is not None]
    if not changing:
        return []
    known = _stored_params(session, changing, runs)
    fresh_of: list[dict[str, str]] = []  # per batch: the parameters it adds
    for batch in changing:
        run = runs[batch.run_id]
        fresh: dict[str, str] = {}
        for key, value in batch.params.items():
            stored = known.get((run.pk, key))
            if stored is None:  # neither stored nor logged earlier in this request
                known[(run.pk, key)] = fresh[key] = value
            elif stored != value:
                raise _immutable(key, run.run_id, stored, value)
        fresh_of.append(fresh)
    _insert_params(session, changing, fresh_of, runs)
    # Read under the runs' locks (every tag writer takes them first), so the comparison is with what
    # the last writer committed.
    stored_tags = _stored_tags(session, changing, runs)
    tags: dict[tuple[int, str], str] = {}
    ends: dict[int, tuple[str, int]] = {}
    events: list[AuditEvent] = []
    for batch, fresh in zip(changing, fresh_of, strict=True):
        run = runs[batch.run_id]
        # Only the tags whose value changes (stored, or set earlier in this request) are written and
        # audited: the audit log records changes, and a tag re-sent with its value appended an entry.
        changed_tags: dict[str, str] = {}
        for key, value in batch.tags.items():
            if stored_tags.get((run.pk, key)) != value:
                stored_tags[(run.pk, key)] = tags[(run.pk, key)] = changed_tags[key] = value
        if fresh or changed_tags:
            events.append(
                AuditEvent(actor, "update", "run", run.run_id, None, {"params": fresh, "tags": changed_tags})
            )
        if batch.end_status is not None:
            before = {"status": run.status, "end_time_us": run.end_time_us}
            end_time_us = end_time_of(batch.end_status, batch.end_time_us, run.start_time_us)
            after = {"status": batch.end_status, "end_time_us": end_time_us}
            if after == before:  # an ended run's end repeated: no change, no entry (as UpdateRun's)
                continue
            run.status, run.end_time_us = batch.end_status, end_time_us
            ends[run.pk] = (run.status, run.end_time_us)
            events.append(AuditEvent(actor, "update", "run", run.run_id, before, after))
    _write_rows(session, tags, ends)
    return events


def _immutable(key: str, run_id: str, stored: str, value: str) -> InvalidArgument:
    return InvalidArgument(
        f"parameter {key!r} of run {run_id} is already {stored!r} and parameters are immutable "
        f"(got {value!r})"
    )


def _insert_params(
    session: Session,
    batches: Sequence[PreparedBatch],
    fresh_of: list[dict[str, str]],
    runs: dict[str, _RunState],
) -> None:
    """Inserts the new parameters (one statement, in key order so that concurrent writers lock in one
    order). On PostgreSQL a concurrent request may have stored one of them since it was read: the same
    value is then not new (and drops out of this request's audit entry), another value is refused."""
    rows = {
        (runs[batch.run_id].pk, key): value
        for batch, fresh in zip(batches, fresh_of, strict=True)
        for key, value in fresh.items()
    }
    if not rows:
        return
    statement = _insert_new(session, _PARAMS, ("run_pk", "key"))
    values = [{"run_pk": pk, "key": key, "value": value} for (pk, key), value in sorted(rows.items())]
    lost = set(rows) - {(row.run_pk, row.key) for row in session.execute(statement, values)}
    if not lost:
        return
    stored = _stored_params(session, batches, runs)
    for batch, fresh in zip(batches, fresh_of, strict=True):
        pk = runs[batch.run_id].pk
        for key in [key for key in fresh if (pk, key) in lost]:
            if stored[(pk, key)] != fresh[key]:
                raise _immutable(key, batch.run_id, stored[(pk, key)], fresh[key])
            del fresh[key]


def _stored_params(
    session: Session, batches: Sequence[PreparedBatch], runs: dict[str, _RunState]
) -> dict[tuple[int, str], str]:
    """The stored values of the parameters the batches log, by (run pk, key), in one query."""
    keys = sorted({key for batch in batches for key in batch.params})
    if not keys:
        return {}
    pks = sorted({runs[batch.run_id].pk for batch in batches if batch.params})
    statement = select(_PARAMS.c.run_pk, _PARAMS.c.key, _PARAMS.c.value).where(
        _PARAMS.c.run_pk.in_(pks), _PARAMS.c.key.in_(keys)
    )
    return {(row.run_pk, row.key): row.value for row in session.execute(statement)}


def _stored_tags(
    session: Session, batches: Sequence[PreparedBatch], runs: dict[str, _RunState]
) -> dict[tuple[int, str], str]:
    """The stored values of the tags the batches set, by (run pk, key), in one query."""
    keys = sorted({key for batch in batches for key in batch.tags})
    if not keys:
        return {}
    pks = sorted({runs[batch.run_id].pk for batch in batches if batch.tags})
    statement = select(_TAGS.c.run_pk, _TAGS.c.key, _TAGS.c.value).where(
        _TAGS.c.run_pk.in_(pks), _TAGS.c.key.in_(keys)
    )
    return {(row.run_pk, row.key): row.value for row in session.execute(statement)}


def _write_rows(session: Session, tags: dict[tuple[int, str], str], ends: dict[int, tuple[str, int]]) -> None:
    """One upsert of tags, one executemany UPDATE of run statuses; rows in key order, so concurrent
    writers take row locks in one order."""
    if tags:
        statement = _tag_upsert(session.get_bind().dialect.name)
        rows = [{"run_pk": pk, "key": key, "value": value} for (pk, key), value in sorted(tags.items())]
        session.execute(statement, rows)
    if ends:
        rows = [
            {"pk": pk, "new_status": status, "new_end_time_us": end}
            for pk, (status, end) in sorted(ends.items())
        ]
        session.execute(_END_RUNS, rows)


@functools.cache
def _tag_upsert(dialect: str) -> Any:
    """Built once per dialect (building an upsert costs about as much as running a small one)."""
    statement = _dialect_insert(dialect, _TAGS)
    return statement.on_conflict_do_update(
        index_elements=["run_pk", "key"], set_={"value": statement.excluded.value}
    )


def _insert_new(session: Session, table: Table, key: tuple[str, ...]) -> Any:
    """``INSERT ... ON CONFLICT (key) DO NOTHING RETURNING key``: the rows another transaction inserted
    first (PostgreSQL, READ COMMITTED: it committed while this insert waited on the unique index) are
    skipped instead of failing the request, and are the ones missing from what it returns."""
    return _insert_new_for(session.get_bind().dialect.name, table, key)


@functools.cache
def _insert_new_for(dialect: str, table: Table, key: tuple[str, ...]) -> Any:
    statement = _dialect_insert(dialect, table).on_conflict_do_nothing(index_elements=list(key))
    return statement.returning(*(table.c[name] for name in key))


def _dialect_insert(dialect: str, table: Table) -> Any:
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise InvalidArgument(f"run batches need SQLite or PostgreSQL, not {dialect}")
