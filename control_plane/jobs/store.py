"""Job rows in and out: every state transition goes through :func:`transition`, which updates the row,
appends a ``job_events`` row and an audit entry in the caller's write transaction, so the three commit
together. Also the conversions between rows and ``aether.v1.Job`` messages."""

from __future__ import annotations

import time
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, cast

from google.protobuf import json_format
from sqlalchemy import select
from sqlalchemy.orm import Session

from clients.aether.v1 import jobs_pb2 as pb
from clients.errors import InvalidArgument, NotFound
from control_plane.audit.log import record
from control_plane.jobs.files import JobFiles, unicode_outputs
from control_plane.jobs.tables import JobEventRow, JobRow

#: The actor of transitions the supervisor makes on its own (starts, exits, retries, timeouts).
SUPERVISOR_ACTOR = "aether-jobs"


class JobState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    RETRYING = "RETRYING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def proto(self) -> pb.JobState:
        return cast(pb.JobState, pb.JobState.Value(f"JOB_STATE_{self.value}"))

    @classmethod
    def from_proto(cls, value: int) -> JobState:
        return cls(pb.JobState.Name(value).removeprefix("JOB_STATE_"))


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
#: States of a job waiting for devices: the queue.
WAITING = frozenset({JobState.QUEUED, JobState.RETRYING})


def now_us() -> int:
    return time.time_ns() // 1000


def spec_to_dict(spec: pb.JobSpec) -> dict[str, Any]:
    return json_format.MessageToDict(spec, preserving_proto_field_name=True)


def spec_from_dict(data: dict[str, Any]) -> pb.JobSpec:
    return json_format.ParseDict(data, pb.JobSpec())


def _state(row: JobRow) -> dict[str, Any]:
    return {"state": row.state, "reason": row.reason, "attempt": row.attempt, "devices": list(row.devices)}


def transition(
    session: Session, row: JobRow, state: JobState, reason: str, *, actor: str, at_us: int, **changes: Any
) -> None:
    """Moves ``row`` to ``state`` for ``reason`` (also applying ``changes`` to its columns), recording the
    event and auditing it, in the caller's write transaction."""
    before = _state(row)
    row.state = state.value
    row.reason = reason
    row.updated_at_us = at_us
    for column, value in changes.items():
        setattr(row, column, value)
    note(session, row, reason, actor=actor, at_us=at_us, action="transition", before=before)


def note(
    session: Session,
    row: JobRow,
    reason: str,
    *,
    actor: str,
    at_us: int,
    action: str,
    before: dict[str, Any] | None,
) -> None:
    """Records an event of ``row`` in its current state (a transition, or e.g. a re-adoption)."""
    session.add(
        JobEventRow(job_id=row.job_id, state=row.state, reason=reason, attempt=row.attempt, at_us=at_us)
    )
    record(
        session, actor=actor, action=action, object_type="job", object_id=row.job_id,
        before=before, after=_state(row),
    )  # fmt: skip


def job_row(session: Session, job_id: str, *, for_update: bool = False) -> JobRow:
    """The job's row; INVALID_ARGUMENT for an empty id (a request that names no job), NOT_FOUND for an
    id no job has."""
    if not job_id:
        raise InvalidArgument("a job_id is required")
    row = locked_job_row(session, job_id) if for_update else session.get(JobRow, job_id)
    if row is None:
        raise NotFound(f"job {job_id!r} not found")
    return row


def locked_job_row(session: Session, job_id: str) -> JobRow | None:
    """The job's row read to be changed: locked until the write transaction ends (``SELECT … FOR
    UPDATE``). The jobs service and the supervisor both decide from a row's state and then write it; on
    PostgreSQL, whose default isolation lets a plain read go on past another transaction's write, one of
    them would overwrite the other's change (a cancel that read QUEUED turning the supervisor's RUNNING
    into CANCELLED while its process runs). Locked, the second waits and decides from the first's result.
    SQLite takes its one write lock at the transaction's start, so there the lock changes nothing."""
    return session.get(JobRow, job_id, with_for_update=True, populate_existing=True)


def history(session: Session, job_id: str) -> list[JobEventRow]:
    return list(
        session.scalars(select(JobEventRow).where(JobEventRow.job_id == job_id).order_by(JobEventRow.id))
    )


def job_message(row: JobRow, events: Sequence[JobEventRow] = ()) -> pb.Job:
    files = JobFiles(Path(row.folder))
    job = pb.Job(
        job_id=row.job_id,
        spec=spec_from_dict(row.spec),
        state=JobState(row.state).proto,
        reason=row.reason,
        attempt=row.attempt,
        devices=list(row.devices),
        submitted_at_us=row.submitted_at_us,
        started_at_us=row.started_at_us,
        finished_at_us=row.finished_at_us,
        updated_at_us=row.updated_at_us,
        run_id=row.run_id,
        checkpoint_dir=str(files.checkpoints),
        log_path=str(files.log),
        submitted_by=row.submitted_by,
        cancel_requested=row.cancel_requested,
        history=[
            pb.JobTransition(state=JobState(e.state).proto, reason=e.reason, attempt=e.attempt, at_us=e.at_us)
            for e in events
        ],
    )
    # Left unset when no status was recorded (no attempt finished, or its launcher was killed before it
    # wrote one): ``or 0`` made that read as a clean exit.
    if row.exit_code is not None:
        job.exit_code = row.exit_code
    if row.outputs:
        # Mended as the supervisor reads them now (files.read_outputs); a row stored before holds them raw.
        job.outputs.update(unicode_outputs(row.outputs)[0])
    return job
