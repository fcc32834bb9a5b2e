"""Admission: the supervisor's step that plans the queue through the pure scheduler (``scheduler.py``)
and makes each admitted job RUNNING on its devices, or FAILED when it can never start (more GPUs than
the pool has, a stored spec or timeout that cannot be read back), before :class:`attempts.Attempts`
starts its process.

A device is never handed out twice: admission decides from a read of the running jobs that can be stale
by the time of the start (a start by another supervisor on the same database, which the leader lease,
``lease.py``, keeps from acting at all; this is the devices' own guard beneath it), so a start
checks again, in the write transaction that makes the job RUNNING, that no RUNNING job (the only state
that holds devices) holds any of its devices, and otherwise leaves the job waiting for the next tick to
plan again, launching nothing more this tick so that no job behind it passes it. Those write
transactions are serialized: on SQLite by the database's one write lock, which ``write_session`` takes
at the transaction's start, on PostgreSQL by a transaction-scoped advisory lock (:func:`_lock_devices`).

A start that fails ends the tick's plan the same way: a launch that raises (the attempt then ends at
once, retried while retries remain: ``Attempts.start``) or anything that raises before the job is RUNNING
(it stays waiting, its reason saying why, and is tried again next tick). The jobs planned behind it went
on starting in that tick, a later job passing an earlier one in strict FIFO; now none of them starts until
the next tick plans again, the failed job in its old place. A rejection (a job that can never start) does
not hold the others back: it has no place in the queue.

A start that fails before its job is RUNNING on every try (its folder gone for good) would hold that
place for ever, the strict queue behind it with it: once its starts have failed on every try for
``JobsSettings.start_give_up_s`` (``AETHER_JOBS_START_GIVE_UP_S``) since its last start that got through,
the job ends FAILED saying so and why. Only the time between failed tries counts (:class:`_FailingStart`):
a tick in which the job's start was not tried and failed (it waited for a device, for a uid of
``AETHER_JOB_UID_RANGE``, or behind a job ahead of it) pauses the count, for waiting is not a failed start;
counted from the first failure, a job whose start failed once and which then waited ten minutes for a
uid was failed at its first failed start after. The count is this supervisor's (a restart or a new leader
starts it again): the bound is reached later, never sooner.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db import read_session, write_session
from control_plane.jobs.attempts import Attempts, EndRun, Fence
from control_plane.jobs.files import JobFiles
from control_plane.jobs.job_user import JobUser
from control_plane.jobs.lease import LeaseLost
from control_plane.jobs.runs import leftover_run
from control_plane.jobs.scheduler import QueuedJob, Reject, RunningJob, schedule
from control_plane.jobs.settings import JobsSettings
from control_plane.jobs.spec import timeout_problem
from control_plane.jobs.staging import ensure_in_place
from control_plane.jobs.store import (
    SUPERVISOR_ACTOR,
    TERMINAL,
    WAITING,
    JobState,
    locked_job_row,
    now_us,
    spec_from_dict,
    transition,
)
from control_plane.jobs.tables import JobRow
from control_plane.jobs.uid_range import RangeUsers

_log = logging.getLogger("aether.jobs")

#: Guards one job's handling (the supervisor's ``_each_job``): logs what fails and lets the others go on.
EachJob = Callable[[str, str], AbstractContextManager[None]]


class Admission:
    """Admits a supervisor's queued jobs; its attempts are started through ``attempts``."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: JobsSettings,
        attempts: Attempts,
        *,
        each_job: EachJob,
        stopping: threading.Event,
        create_run: Callable[[JobRow], str],
        end_run: EndRun,
        fence: Fence,
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._attempts = attempts
        self._each_job = each_job
        self._stopping = stopping
        self._create_run = create_run
        self._end_run = end_run
        self._fence = fence
        self._uids = None if settings.job_uid_range is None else RangeUsers(settings.job_uid_range)
        #: How long each waiting job's start has failed on every try (module doc).
        self._failing: dict[str, _FailingStart] = {}
        #: The jobs whose start was tried and failed in this tick: the others' counts pause.
        self._failed_this_tick: set[str] = set()

    def admit(self) -> None:
        try:
            self._admit()
        finally:
            for job_id, failing in self._failing.items():
                if job_id not in self._failed_this_tick:
                    failing.waited()
            self._failed_this_tick.clear()

    def _admit(self) -> None:
        settings = self._settings
        with read_session(self._sessions) as session:
            held = session.execute(select(*_HELD).where(JobRow.state == HOLDS_DEVICES.value)).all()
            waiting = session.execute(
                select(JobRow.job_id, JobRow.gpus, JobRow.timeout_s, JobRow.folder)
                .where(
                    JobRow.state.in_([state.value for state in WAITING]), JobRow.cancel_requested.is_(False)
                )
                .order_by(JobRow.priority.desc(), JobRow.submitted_at_us, JobRow.job_id)
            ).all()
        waiting_ids = {job.job_id for job in waiting}
        self._failing = {job: failing for job, failing in self._failing.items() if job in waiting_ids}
        if not waiting:
            return
        grace_us = int(settings.kill_grace_s * 1e6)
        busy = {device for row in held for device in row.devices}
        running = []
        for row in held:
            try:
                timeout_us = _timeout_us(row.timeout_s)
            except ValueError:  # no end bound to reserve by (it is watched as one without a timeout)
                timeout_us = None
            ends_by = None if timeout_us is None else row.attempt_started_at_us + timeout_us + grace_us
            running.append(RunningJob(row.job_id, tuple(row.devices), ends_by))
        queue = []
        for job in waiting:
            try:
                timeout_us = _timeout_us(job.timeout_s)
            except ValueError as exc:
                # Stored before Submit bounded it (1e303 s overflowed here and stopped every tick, so no
                # job was ever scheduled again): this job can never be scheduled; the others can.
                with self._each_job(job.job_id, "fail"):
                    self.reject(job.job_id, f"the stored job cannot be scheduled: {exc}")
                continue
            queue.append(
                QueuedJob(job.job_id, job.gpus, None if timeout_us is None else timeout_us + grace_us)
            )
        decisions = schedule(
            queue,
            [device for device in settings.pool.devices if device not in busy],
            settings.pool.size,
            policy=settings.policy,
            running=running,
            now_us=now_us(),
            backfill_depth=settings.backfill_depth,
        )
        if (uids := self._uids) is not None:  # what is held is read once a tick: uid_range.RangeUsers
            uids.new_tick(Path(row.folder) for row in held)
        folders = {job.job_id: Path(job.folder) for job in waiting}
        for decision in decisions:
            if self._stopping.is_set():
                return
            if isinstance(decision, Reject):
                # A job that can never start holds no place in the queue: the plan goes on whether its
                # rejection is written or (logged, tried again next tick) not.
                with self._each_job(decision.job_id, "fail"):
                    self.reject(decision.job_id, decision.reason)
                continue
            if not self._start(decision.job_id, decision.devices, folders[decision.job_id]):
                # This job did not start as planned (module doc): the plan is stale, and a job behind it
                # must not pass it on what is left (strict order, or a backfill reservation computed with
                # this job running). The next tick plans again, this job in its old place.
                return

    def _start(self, job_id: str, devices: tuple[str, ...], folder: Path) -> bool:
        """Starts ``job_id`` on ``devices`` as planned; whether the jobs planned behind it may start in
        this tick: not when its start failed (its launch, which ends the attempt, or anything before
        it, which leaves it waiting: logged, said in its reason, and tried again next tick) or its devices
        were taken."""
        with self._each_job(job_id, "start"):
            try:
                uids = self._uids
                if uids is not None and uids.none_left(job_id, JobFiles(folder)):
                    return True  # no uid for any job behind it either
                return self._launch(job_id, devices)
            except LeaseLost:  # not this job's fault: the tick ends
                raise
            except Exception as exc:
                if not self._give_up_on(job_id, exc):
                    self._say_why_it_waits(job_id, exc)
                raise
        return False  # it raised (logged by _each_job)

    def _give_up_on(self, job_id: str, exc: Exception) -> bool:
        """Fails ``job_id`` when its start has failed on every try for ``start_give_up_s`` (module doc),
        ``exc`` being the latest failure; whether it did. Its log is written if it can be (the failure
        may be that its folder is gone): the reason is on the job all the same."""
        self._failed_this_tick.add(job_id)
        failed_for = self._failing.setdefault(job_id, _FailingStart()).failed(time.monotonic())
        give_up_s = self._settings.start_give_up_s
        if failed_for < give_up_s:
            return False
        problem = (str(exc) or type(exc).__name__)[:_MAX_PROBLEM_CHARS]
        self.reject(
            job_id,
            f"its start failed on every try for {give_up_s:g} s (AETHER_JOBS_START_GIVE_UP_S): {problem}",
            log_if_possible=True,
        )
        self._failing.pop(job_id, None)
        return True

    def _say_why_it_waits(self, job_id: str, exc: Exception) -> None:
        """Records on the job, while it still waits, that its start failed for ``exc`` (its reason, and
        an event in its history, once per distinct reason): ``Get`` and ``aetherctl jobs`` showed
        "submitted by ..." for a job whose every start failed (a full disk: its log could not say it
        either), and only the control plane's log told why. The job is not failed: no attempt was made, and
        what failed may pass (a disk gets room). A failure to record it is logged, not raised."""
        problem = (str(exc) or type(exc).__name__)[:_MAX_PROBLEM_CHARS]
        reason = f"waiting to start: {problem}; tried again every tick"
        try:
            with write_session(self._sessions) as session:
                self._fence(session)
                row = locked_job_row(session, job_id)
                if row is None or JobState(row.state) not in WAITING or row.reason == reason:
                    return
                transition(session, row, JobState(row.state), reason, actor=SUPERVISOR_ACTOR, at_us=now_us())
        except Exception:  # the start's own error is logged by _each_job
            _log.debug("cannot record why job %s waits", job_id, exc_info=True)

    def reject(self, job_id: str, reason: str, *, log_if_possible: bool = False) -> None:
        """Fails ``job_id``, still waiting, for ``reason`` (written to its log first; unless
        ``log_if_possible``, a log that cannot be written leaves the job waiting)."""
        at = now_us()
        with write_session(self._sessions) as session:
            self._fence(session)
            row = locked_job_row(session, job_id)
            if row is None or JobState(row.state) not in WAITING:
                return
            ensure_in_place(Path(row.folder))
            files = JobFiles(Path(row.folder))
            if log_if_possible:
                files.append_log_if_possible(f"error: {reason}")
            else:
                files.append_log(f"error: {reason}")
            # Set when an earlier attempt ran (the job was RETRYING), or a start that crashed left one.
            run_id = row.run_id or leftover_run(session, files)
            transition(
                session, row, JobState.FAILED, reason, actor=SUPERVISOR_ACTOR, at_us=at, finished_at_us=at,
                run_id=run_id,
            )  # fmt: skip
        if run_id:
            self._end_run(run_id, JobState.FAILED, at)

    def _launch(self, job_id: str, devices: tuple[str, ...]) -> bool:
        """Starts the next attempt of ``job_id`` on ``devices``, unless it no longer waits to. False when
        it still waits because one of ``devices`` was taken meanwhile (module doc), or when its attempt
        was made but could not be launched (``Attempts.start``)."""
        at = now_us()
        with read_session(self._sessions) as session:
            row = session.get(JobRow, job_id)
            if row is None or JobState(row.state) not in WAITING or row.cancel_requested:
                return True
            unreadable = _unreadable_spec(row)
        ensure_in_place(Path(row.folder))  # read between its submit's commit and rename (staging.py)
        if unreadable:  # every attempt would fail on it, and a RUNNING job without a process is stuck
            self.reject(job_id, unreadable)
            return True
        user = self._settings.job_user
        if self._uids is not None:
            user = self._free_uid(job_id, JobFiles(Path(row.folder)))
            if user is None:  # it waits, as for a device, until an attempt ends
                return True
        # Created once this session has given its connection back: the tracking store's write takes a
        # connection of its own, and holding one while waiting for another can exhaust the pool.
        run_id = row.run_id or self._create_run(row)
        attempt = row.attempt + 1
        where = f"devices {','.join(devices)}" if devices else "CPU"
        reason = f"attempt {attempt} of {1 + row.max_retries} started on {where}"
        with write_session(self._sessions) as session:
            self._fence(session)
            if devices:  # before the job's row (_lock_devices)
                _lock_devices(session)
            row = locked_job_row(session, job_id)
            if row is None:
                return True
            state, ended = JobState(row.state), None
            if state in WAITING and not row.cancel_requested:
                if holder := _holder_of(session, devices):
                    # Its run, created above, stays reserved in the job's folder for the next start.
                    _log.info(
                        "job %s waits: device(s) %s of its plan are held by job %s, started meanwhile "
                        "(by another supervisor on this database?)",
                        job_id, ",".join(devices), holder,
                    )  # fmt: skip
                    return False
                transition(
                    session, row, JobState.RUNNING, reason, actor=SUPERVISOR_ACTOR, at_us=at, attempt=attempt,
                    devices=list(devices), run_id=run_id, attempt_started_at_us=at, process_ref="", pid=0,
                    started_at_us=row.started_at_us or at,
                )  # fmt: skip
                self._failing.pop(job_id, None)  # a start that got through: its next failure counts anew
            elif state not in TERMINAL or not run_id or run_id == row.run_id:
                # No run, or one whoever ended the job has ended (an earlier attempt's, a leftover).
                return True
            else:
                # Cancelled while the run was being created, so the cancel found no run to end: the new
                # run is stored on the job all the same (not an orphan) and ended with it.
                row.run_id, ended = run_id, state
        if ended is not None:
            self._end_run(run_id, ended, at)
            return True
        return self._attempts.start(row, attempt, devices, run_id, user, reason)

    def _free_uid(self, job_id: str, files: JobFiles) -> JobUser | None:
        """The job user of the next attempt of ``job_id`` (``uid_range.py``), None while none is free."""
        assert self._uids is not None
        return self._uids.next_user(job_id, files.folder, files.append_log)


@dataclass
class _FailingStart:
    """How long a waiting job's start has failed on every try: the time from each failed try to the next,
    summed, leaving out each stretch in which it waited (a tick in which it was not tried and failed)."""

    #: Seconds counted so far.
    failed_for: float = 0.0
    #: When its latest failed try was (``time.monotonic``), None when it has waited since.
    last_failure: float | None = None

    def failed(self, now: float) -> float:
        """Counts a failed try at ``now``; how long its start has failed on every try, this one included."""
        if self.last_failure is not None:
            self.failed_for += now - self.last_failure
        self.last_failure = now
        return self.failed_for

    def waited(self) -> None:
        """The job waited since its latest failed try: the time until its next one is not counted."""
        self.last_failure = None


#: The most of a failed start's error that goes into the job's reason (``Admission._say_why_it_waits``).
_MAX_PROBLEM_CHARS = 1000

#: The one state whose jobs hold devices: every transition out of RUNNING clears ``devices``.
HOLDS_DEVICES = JobState.RUNNING

#: The PostgreSQL advisory lock every start on devices takes (``aether.jobs.devices``; no other code
#: takes it). Any constant would do; this one is derived from the name, as the project's other keys are.
DEVICES_LOCK_KEY = int.from_bytes(
    hashlib.blake2b(b"aether.jobs.devices", digest_size=8).digest(), "big", signed=True
)


def _lock_devices(session: Session) -> None:
    """Serializes, until the caller's write transaction ends, the starts of jobs on devices, so that of
    two supervisors on one database the second's check (:func:`_holder_of`) sees the first's start.
    SQLite's write transactions hold the whole database's lock already (``BEGIN IMMEDIATE``). PostgreSQL
    gets a transaction-scoped advisory lock: its default isolation, READ COMMITTED, lets two starts each
    read the RUNNING jobs before the other commits, and there is no row both must lock (the device pool
    is configuration, not a table). Taken after the lease's fence (a shared lock of its row, which only a
    takeover's update waits for) and before the job's row; no other transaction takes it, so no two wait
    on each other in crossing orders."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(DEVICES_LOCK_KEY)))


def _holder_of(session: Session, devices: tuple[str, ...]) -> str:
    """The id of a job holding one of ``devices`` now, read in the caller's write transaction, or ""."""
    if not devices:
        return ""
    wanted = set(devices)
    held = session.execute(select(JobRow.job_id, JobRow.devices).where(JobRow.state == HOLDS_DEVICES.value))
    return next((job_id for job_id, used in held if wanted.intersection(used)), "")


#: What admission reads of the running jobs: their devices, when they end, and their folders (uid_range.py).
_HELD = (JobRow.job_id, JobRow.devices, JobRow.attempt_started_at_us, JobRow.timeout_s, JobRow.folder)


def _unreadable_spec(row: JobRow) -> str:
    """Why the spec stored on ``row`` cannot be read back (a row an older control plane wrote), or ""."""
    try:
        spec_from_dict(row.spec)
    except json_format.ParseError as exc:
        return f"the stored job spec cannot be read: {exc}"
    return ""


def _timeout_us(timeout_s: float) -> int | None:
    """A job row's timeout in µs; None for none (0). ValueError naming the field and its bound for one no
    job can have, stored before Submit refused it (not a finite number >= 0, or so large that it
    overflows)."""
    if timeout_s == 0:
        return None
    if math.isfinite(timeout_s) and timeout_s > 0:
        with contextlib.suppress(OverflowError):
            return int(timeout_s * 1e6)
    raise ValueError(timeout_problem(timeout_s))
