"""ORM tables of control_plane.jobs (registered on control_plane.db.models.Base).

* ``jobs``: one row per job: its spec (protobuf JSON), state and the reason for it, the current attempt,
  the devices it holds while RUNNING, and what identifies its running process (``process_ref``, an
  executor-specific string such as ``pid:start_ticks``) so a restarted control plane can re-adopt it,
  and a stop in progress (why the attempt got SIGTERM, and when) so that it finishes the stop as the
  control plane that began it would have (a timeout is not retried; SIGKILL follows the grace period).
  ``queue_key`` orders the queue: priority first, then submission time.
* ``job_events``: every state transition of every job with its reason, attempt and time (also in the
  audit log, which is the tamper-evident copy; this table is the one queries and ``Job.history`` read).
* ``job_supervisor_lease``: the leader lease that lets one supervisor of those sharing the database act.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Double, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db.models import NAME_LENGTH, ROW_ID, Base

JOB_ID_LENGTH = 32
STATE_LENGTH = 16


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_queue", "state", "priority", "submitted_at_us"),)

    job_id: Mapped[str] = mapped_column(String(JOB_ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(STATE_LENGTH))  # QUEUED | RUNNING | RETRYING | ...
    reason: Mapped[str] = mapped_column(Text)
    gpus: Mapped[int] = mapped_column(Integer)
    priority: Mapped[int] = mapped_column(Integer)
    max_retries: Mapped[int] = mapped_column(Integer)
    timeout_s: Mapped[float] = mapped_column(Double)
    attempt: Mapped[int] = mapped_column(Integer)
    #: Devices held while RUNNING, as the pool names them; [] otherwise.
    devices: Mapped[list[str]] = mapped_column(JSON)
    process_ref: Mapped[str] = mapped_column(String(256))
    pid: Mapped[int] = mapped_column(Integer)
    attempt_started_at_us: Mapped[int] = mapped_column(BigInteger)
    submitted_at_us: Mapped[int] = mapped_column(BigInteger)
    started_at_us: Mapped[int] = mapped_column(BigInteger)
    finished_at_us: Mapped[int] = mapped_column(BigInteger)
    updated_at_us: Mapped[int] = mapped_column(BigInteger)
    submitted_by: Mapped[str] = mapped_column(String(128))
    run_id: Mapped[str] = mapped_column(String(64))
    folder: Mapped[str] = mapped_column(Text)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    outputs: Mapped[dict[str, Any]] = mapped_column(JSON)
    cancel_requested: Mapped[bool] = mapped_column(Boolean)
    cancel_reason: Mapped[str] = mapped_column(Text)
    #: Why the running attempt was sent SIGTERM ("cancel" | "timeout"), "" when it was not.
    stop_kind: Mapped[str] = mapped_column(String(STATE_LENGTH), default="", server_default="")
    #: When that SIGTERM went out (µs); 0 with no stop.
    stop_sent_at_us: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class JobEventRow(Base):
    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job", "job_id", "id"),)

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True)
    job_id: Mapped[str] = mapped_column(String(JOB_ID_LENGTH))
    state: Mapped[str] = mapped_column(String(STATE_LENGTH))
    reason: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer)
    at_us: Mapped[int] = mapped_column(BigInteger)


#: Room for ``host:pid:random`` (:func:`control_plane.jobs.lease.new_holder`).
LEASE_HOLDER_LENGTH = 128


class JobSupervisorLeaseRow(Base):
    """``job_supervisor_lease``: one row (id 1), the leader lease of the job supervisors sharing this
    database (``lease.py``): who holds it, until when (the database's clock, µs), and its epoch, the
    fencing token, one higher at every change of holder. Only the holder of the current epoch commits
    supervisor decisions."""

    __tablename__ = "job_supervisor_lease"

    #: Always 1: the row is made by the migration (or the first supervisor), never generated.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    holder: Mapped[str] = mapped_column(String(LEASE_HOLDER_LENGTH))
    epoch: Mapped[int] = mapped_column(BigInteger)
    expires_at_us: Mapped[int] = mapped_column(BigInteger)
