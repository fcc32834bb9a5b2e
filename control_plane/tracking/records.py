"""Shared pieces of the tracking core: clocks, status names, validation of names and key/value maps,
the dialect's upsert, the one status-change path (with its audit entry), and rows -> proto messages."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from clients.aether.v1 import tracking_pb2 as pb
from clients.errors import FailedPrecondition, InvalidArgument
from clients.int64 import INT64_MAX, INT64_MIN
from clients.tracking_rules import MAX_RUN_VALUES_BYTES as MAX_RUN_VALUES_BYTES
from clients.tracking_rules import check_name as check_name  # the SDK applies these at the call too
from clients.tracking_rules import check_run_values as check_run_values
from clients.tracking_rules import check_time_us as check_time_us
from clients.tracking_rules import check_values as check_values
from clients.uris import redact_uri
from control_plane.audit.log import record
from control_plane.db.strings import byte_order
from control_plane.tracking.tables import (
    ExperimentRow,
    MetricLatestRow,
    ParamRow,
    RunArtifactRow,
    RunRow,
    TagRow,
)

_STATUS_PREFIX = "RUN_STATUS_"
TERMINAL = frozenset({"FINISHED", "FAILED", "KILLED"})


class RunEnded(FailedPrecondition):
    """A write with a job's token (``control_plane.api.job_tokens``) to its run after the run ended.

    FAILED_PRECONDITION, not PERMISSION_DENIED: the same request with the same token was allowed until
    the run's status changed, and the admin token may still make it; what refuses it is the state of the
    run, read in the write's own transaction, not the scope of the token (PERMISSION_DENIED is what the
    token may never do: another run, a write outside its scope). It is the status the RunEnd of an ended
    run had before, so a job learns "your run has ended" one way whatever it wrote."""


def refuse_ended(run_id: str, status: str, actor: str, write: str) -> None:
    """:class:`RunEnded` when run ``run_id`` has ended (``status`` terminal, read under the run's lock in
    the caller's write transaction): ``actor``, a job's principal, may no longer ``write`` to it."""
    if status in TERMINAL:
        raise RunEnded(
            f"run {run_id} of {actor} has ended {status}: its job token may no longer write to it"
            f" ({write} refused); nothing was written"
        )


def refuse_reopening(run_id: str, status: str, new_status: str) -> None:
    """FAILED_PRECONDITION when run ``run_id``, whose status is ``status`` (read under its lock), has
    ended and ``new_status`` would make it RUNNING again. An ended run keeps its end: its end time and
    duration were wiped, and a job's or a sweep's verdict undone, by one UpdateRun(RUNNING), while a
    LogBatch's RunEnd never reopened one. Another end (FINISHED to FAILED) is taken, as a RunEnd of an
    ended run is; RUNNING to RUNNING changes nothing."""
    if status in TERMINAL and new_status not in TERMINAL:
        raise FailedPrecondition(
            f"run {run_id!r} has ended {status}: an ended run cannot be set {new_status} again;"
            " nothing was changed"
        )


def now_us() -> int:
    return time.time_ns() // 1000


def status_name(status: int) -> str:
    """``pb.RUN_STATUS_FINISHED`` -> ``"FINISHED"``; INVALID_ARGUMENT for unset or unknown values."""
    if status == pb.RUN_STATUS_UNSPECIFIED or status not in pb.RunStatus.values():
        raise InvalidArgument(
            f"run status {status} is not a valid status (RUNNING, FINISHED, FAILED, KILLED)"
        )
    return pb.RunStatus.Name(status)[len(_STATUS_PREFIX) :]


def status_value(name: str) -> pb.RunStatus:
    value: pb.RunStatus = getattr(pb, _STATUS_PREFIX + name)
    return value


def insert_for(session: Session) -> Any:
    """The dialect's INSERT construct that supports ``on_conflict_do_update``."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def end_time_of(status: str, end_time_us: int, start_time_us: int) -> int:
    """The end time a run started at ``start_time_us`` gets with ``status``: 0 unless terminal; else the
    given time, or this server's clock when none is given or the given one is before the start, never
    before the start. A client's clock sets the end (the SDK's Run.close sends it), and one that stepped
    back since the start, or is behind the clock that stamped it, sent an end before the start: refusing
    it left the run RUNNING and, in a LogBatch, lost the points sent beside it. Ending a run always
    works, and its duration is never negative (our clock may be behind a client's start too)."""
    if status not in TERMINAL:
        return 0
    if end_time_us >= start_time_us and end_time_us:
        return end_time_us
    return max(now_us(), start_time_us)


def set_status(
    session: Session, row: RunRow, status: str, end_time_us: int, actor: str, *, once: bool = False
) -> bool:
    """Changes a run's status (a terminal one also sets the end time) and audits the change; True when
    it changed. A call that would change nothing (RUNNING to RUNNING, an end given again with the same
    time) writes nothing and audits nothing: the audit log records changes, and such a call filled it with
    entries whose before and after were the same. ``row`` is read under its lock, so the comparison is
    with what the last writer committed. With ``once``, a run that already has ``status`` is left as it
    is, end time included, and nothing is audited: the condition is part of the UPDATE, so of two
    transactions setting the same status at once only one matches the row (PostgreSQL re-checks it on the
    version the first committed)."""
    before = {"status": row.status, "end_time_us": row.end_time_us}
    end = end_time_of(status, end_time_us, row.start_time_us)
    if before == {"status": status, "end_time_us": end}:
        return False
    # A Core UPDATE: the unit of work's flush costs more than the change itself when a batch ends many runs.
    statement = update(RunRow).where(RunRow.id == row.id)
    if once:
        statement = statement.where(RunRow.status != status)
    statement = statement.values(status=status, end_time_us=end)
    result = cast(CursorResult[Any], session.execute(statement.execution_options(synchronize_session=False)))
    if once and result.rowcount == 0:
        return False
    set_committed_value(row, "status", status)
    set_committed_value(row, "end_time_us", end)
    after = {"status": status, "end_time_us": end}
    record(
        session, actor=actor, action="update", object_type="run", object_id=row.run_id,
        before=before, after=after,
    )  # fmt: skip
    return True


def check_stored_values(session: Session, runs: Mapping[int, str]) -> None:
    """:func:`check_run_values` for the runs ``{pk: run id}`` as this transaction has written them."""
    if not runs:
        return
    values: dict[int, tuple[dict[str, str], dict[str, str]]] = {pk: ({}, {}) for pk in runs}
    pks = sorted(runs)
    param_rows = select(ParamRow.run_pk, ParamRow.key, ParamRow.value).where(ParamRow.run_pk.in_(pks))
    tag_rows = select(TagRow.run_pk, TagRow.key, TagRow.value).where(TagRow.run_pk.in_(pks))
    for index, query in enumerate((param_rows, tag_rows)):
        for pk, key, value in session.execute(query):
            values[pk][index][key] = value
    for pk, (params, tags) in values.items():
        check_run_values(runs[pk], params, tags)


def experiment_message(row: ExperimentRow) -> pb.Experiment:
    return pb.Experiment(
        experiment_id=row.experiment_id,
        name=row.name,
        description=row.description,
        tags=row.tags,
        created_at_us=row.created_at_us,
    )


def artifacts_of(session: Session, run_pk: int) -> list[pb.RunArtifact]:
    rows = session.scalars(
        select(RunArtifactRow)
        .where(RunArtifactRow.run_pk == run_pk)
        .order_by(byte_order(RunArtifactRow.name))
    )
    return [
        # (redacted again: a row written before artifact URIs were kept without credentials may hold some)
        pb.RunArtifact(
            name=r.name, sha256=r.sha256, size=r.size, uri=redact_uri(r.uri), logged_at_us=r.logged_at_us
        )
        for r in rows
    ]


def _duration_us(row: RunRow) -> int:
    """End minus start (0 while running), kept within int64: a run stored with a negative start time,
    before start times were checked, must still be readable and endable."""
    if not row.end_time_us:
        return 0
    return max(INT64_MIN, min(INT64_MAX, row.end_time_us - row.start_time_us))


def run_message(session: Session, row: RunRow, experiment_id: str) -> pb.Run:
    params = session.execute(select(ParamRow.key, ParamRow.value).where(ParamRow.run_pk == row.id)).all()
    tags = session.execute(select(TagRow.key, TagRow.value).where(TagRow.run_pk == row.id)).all()
    metrics = session.scalars(
        select(MetricLatestRow).where(MetricLatestRow.run_pk == row.id).order_by(MetricLatestRow.key)
    )
    return pb.Run(
        run_id=row.run_id,
        experiment_id=experiment_id,
        name=row.name,
        status=status_value(row.status),
        start_time_us=row.start_time_us,
        end_time_us=row.end_time_us,
        duration_us=_duration_us(row),
        params=dict(params),
        tags=dict(tags),
        metrics=[
            pb.MetricSummary(
                key=m.key,
                latest_value=m.value,
                latest_step=m.step,
                latest_timestamp_us=m.timestamp_us,
                min_value=m.min_value,
                max_value=m.max_value,
                count=m.count,
            )
            for m in metrics
        ],
        artifacts=artifacts_of(session, row.id),
    )
