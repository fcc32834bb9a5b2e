"""The control plane's job loop: on every tick (and whenever the service wakes it) it

1. re-adopts RUNNING jobs it holds no handle for (after a control-plane restart): the executor finds the
   recorded process (pid + start time, so a reused pid is not mistaken for it), or, when the control
   plane died before recording it, the process that claimed the attempt's pid file (``identity.py``);
   if it is gone, the launcher's exit record says how it ended, and without one the attempt counts as
   failed once what is left of its process group is killed. Devices are freed only then: an attempt
   whose process was never found is one the executor made sure never starts. A stop in progress
   (SIGTERM sent for a cancel or a timeout) is persisted on the job row, so it is carried on too;
2. watches running attempts: a finished attempt ends the job (SUCCEEDED with its outputs, FAILED,
   CANCELLED) or sends it back to the queue as RETRYING while attempts <= 1 + max_retries; a cancel
   request or an attempt past its timeout gets SIGTERM, then SIGKILL after the grace period (only
   SIGKILL to what it left when the job has already ended: its outcome stands);
3. admits queued jobs through the pure scheduler and launches them with the launch environment.

Every transition is persisted with its reason (``store.transition``) before the loop acts on the next
job, so a crash of the control plane at any point loses nothing: a job is RUNNING in the database from
before its process starts until after it has ended, and its process identity is recorded right after
the start (and, before the job starts, in the attempt's pid file by the launcher itself). A job's
tracking run is written apart from the job, so the first tick of every supervisor ends the runs a
crash left RUNNING for jobs that had ended, and a start reuses a run a crashed start created
(``runs.py``). Stopping the supervisor leaves running jobs alone; the next supervisor re-adopts them.

One supervisor per database is the design (the control plane is one process; replicas would need a
leader lease), but nothing enforces it: a second control plane started on the same ``AETHER_DB_URL``, or
an old process still alive during a restart, runs a supervisor of its own. Whatever runs, a device is
never handed out twice: admission decides from a read that can be stale by the time of the start, so a
start checks again, in the write transaction that makes the job RUNNING, that no RUNNING job (the only
state that holds devices) holds any of its devices, and otherwise leaves the job waiting for the next
tick to plan again, launching nothing more this tick so that no job behind it passes it. Those write
transactions are serialized: on SQLite by the database's one write lock, which ``write_session`` takes
at the transaction's start, on PostgreSQL by a transaction-scoped advisory lock (:func:`_lock_devices`).
Only the devices are safe so: two supervisors still each watch (and may stop) the other's attempts, a
start the other has not yet recorded may be given up by it as lost (``executor.adopt``), and two jobs
started by different supervisors may get the same uid of a job uid range.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from google.protobuf import json_format
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db import read_session, write_session
from control_plane.jobs.executor import Executor, ExitStatus, JobHandle, JobLaunch
from control_plane.jobs.files import JobFiles, read_outputs
from control_plane.jobs.job_user import JobUser
from control_plane.jobs.launch_env import TOKEN_FILE, LaunchEnv, sets_token
from control_plane.jobs.launcher import NOT_EXECUTABLE_EXIT
from control_plane.jobs.runs import create_job_run, end_left_runs, end_run, leftover_run
from control_plane.jobs.scheduler import QueuedJob, Reject, RunningJob, schedule
from control_plane.jobs.settings import JobsSettings, open_jobs_folder
from control_plane.jobs.spec import spec_to_json, timeout_problem
from control_plane.jobs.stops import Stop, due_stop
from control_plane.jobs.store import (
    SUPERVISOR_ACTOR,
    TERMINAL,
    WAITING,
    JobState,
    locked_job_row,
    note,
    now_us,
    spec_from_dict,
    transition,
)
from control_plane.jobs.tables import JobRow
from control_plane.jobs.uid_range import RangeUsers
from control_plane.tracking.store import TrackingStore

_log = logging.getLogger("aether.jobs")


class Supervisor:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: JobsSettings,
        executor: Executor,
        control_plane_addr: Callable[[], str],
        job_token: Callable[[str, str], str] | None = None,
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        if settings.job_user is not None:  # refused at start when the job user cannot reach its folders
            open_jobs_folder(settings.folder, settings.job_user)
        if (uid_range := settings.job_uid_range) is not None:  # the range's uids reach them alike
            first = uid_range.user(uid_range.first, settings.folder)
            open_jobs_folder(settings.folder, first, uid_range.setting)
        self._executor = executor
        self._address = control_plane_addr
        #: Mints a job's token for (job id, run id) when auth is on (control_plane.api.job_tokens).
        self._job_token = job_token
        self._tracking = TrackingStore(sessions)
        self._handles: dict[str, JobHandle] = {}
        self._stops: dict[str, Stop] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # Whether runs of ended jobs may be left RUNNING: by a control plane that stopped between ending a
        # job and its run (so at every start), or by a run's end that failed since. Ends that fail
        # elsewhere (the API's cancel, another process) are found by the sweep every run_sweep_s.
        self._runs_left = True
        self._next_sweep = 0.0  # time.monotonic() of the next sweep
        # Jobs whose handling failed with an error already logged with its traceback: a job that fails
        # the same way on every tick is logged once, not once a tick.
        self._logged: set[str] = set()
        self._uids = None if settings.job_uid_range is None else RangeUsers(settings.job_uid_range)

    # Lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="aether-jobs-supervisor", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Ends the loop after the tick in progress. Running jobs keep running."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception:  # one bad tick (e.g. the database briefly locked) must not end the loop
                _log.exception("job supervisor tick failed")
            self._wake.wait(self._settings.tick_s)
            self._wake.clear()

    def tick(self) -> None:
        """One pass: re-adopt, watch, admit (module doc), after ending the runs a crash left running."""
        if self._runs_left or time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + self._settings.run_sweep_s
            self._end_left_runs()
        with read_session(self._sessions) as session:
            running = list(session.scalars(select(JobRow).where(JobRow.state == JobState.RUNNING.value)))
        for row in running:
            if self._stopping.is_set():
                return
            # One job the loop cannot handle (a row an older control plane stored, say) must not stop
            # the others: it is tried again next tick, and the rest are watched and admitted meanwhile.
            with self._each_job(row.job_id, "watch"):
                handle = self._handles.get(row.job_id) or self._adopt(row)
                if handle is not None:
                    self._watch(row, handle)
        if not self._stopping.is_set():
            self._admit()

    @contextlib.contextmanager
    def _each_job(self, job_id: str, doing: str) -> Iterator[None]:
        try:
            yield
        except Exception:
            if job_id in self._logged:
                _log.debug("cannot %s job %s (again)", doing, job_id, exc_info=True)
            else:
                self._logged.add(job_id)
                _log.exception("cannot %s job %s; the other jobs go on", doing, job_id)

    def _end_left_runs(self) -> None:
        try:
            self._runs_left = not end_left_runs(self._sessions, self._tracking, actor=SUPERVISOR_ACTOR)
        except Exception:  # tried again next tick; the jobs themselves need not wait for it
            _log.exception("cannot end the tracking runs of ended jobs")

    # Re-adoption ---------------------------------------------------------------------------------------

    def _adopt(self, row: JobRow) -> JobHandle | None:
        launch = _launch_of(row, self._settings)
        # A blank process_ref: the control plane died between starting the attempt and recording it. The
        # executor still finds it, or makes sure it never starts (None): its devices are then free.
        handle = self._executor.adopt(launch, row.attempt, row.process_ref)
        if handle is None:
            status: ExitStatus | None = ExitStatus(None, "lost: the control plane stopped while starting it")
        else:
            status = handle.poll()
        if status is not None:  # it ended while no control plane watched: its exit record says how
            self._finish(row.job_id, status)
            return None
        assert handle is not None
        self._handles[row.job_id] = handle
        if row.stop_kind:  # the SIGTERM went out before the restart: SIGKILL when its grace runs out
            self._stops[row.job_id] = Stop(row.stop_kind, row.stop_sent_at_us)
        with write_session(self._sessions) as session:
            fresh = locked_job_row(session, row.job_id)
            if fresh is not None and fresh.state == JobState.RUNNING.value:
                if not fresh.process_ref:
                    fresh.process_ref, fresh.pid = handle.ref, handle.pid or 0
                reason = f"re-adopted process {handle.ref} of attempt {row.attempt} after a restart"
                note(
                    session,
                    fresh,
                    reason,
                    actor=SUPERVISOR_ACTOR,
                    at_us=now_us(),
                    action="adopt",
                    before=None,
                )
        launch.files.append_log(f"control plane restarted; re-adopted attempt {row.attempt}")
        return handle

    # Watching ------------------------------------------------------------------------------------------

    def _watch(self, row: JobRow, handle: JobHandle) -> None:
        status = handle.poll()
        if status is not None:
            self._finish(row.job_id, status)
            return
        now = now_us()
        stop = self._stops.get(row.job_id)
        files = JobFiles(Path(row.folder))
        if stop is None and (due := due_stop(row, now)) is not None:
            stop, why = due
            if handle.main_exited:
                # The job has ended and the launcher is ending what it left: the outcome (exit 0 and
                # outputs, say) is decided, so a cancel or a timeout now is not the attempt's stop (not
                # recorded); it only hurries that end, at once rather than after the launcher's grace.
                files.append_log(f"{why} after the job had ended; killing what it left at once")
                stop.killed = True
                self._stops[row.job_id] = stop
                handle.kill()
            else:
                files.append_log(f"{why}; sending SIGTERM")
                # Recorded before the signal: a control plane that restarts while the attempt shuts
                # down must still know why it ends (a timeout is FAILED, not retried).
                self._record_stop(row.job_id, row.attempt, stop)
                self._stops[row.job_id] = stop
                handle.terminate()
        elif stop and not stop.killed and now - stop.since_us >= self._settings.kill_grace_s * 1e6:
            files.append_log(f"still running {self._settings.kill_grace_s:g}s after SIGTERM; sending SIGKILL")
            stop.killed = True
            handle.kill()

    def _record_stop(self, job_id: str, attempt: int, stop: Stop) -> None:
        with write_session(self._sessions) as session:
            row = locked_job_row(session, job_id)
            if row is not None and row.state == JobState.RUNNING.value and row.attempt == attempt:
                row.stop_kind, row.stop_sent_at_us = stop.kind, stop.since_us

    def _finish(self, job_id: str, status: ExitStatus) -> None:
        """Ends the running attempt of ``job_id`` that exited with ``status``."""
        self._stops.pop(job_id, None)
        self._handles.pop(job_id, None)
        at = now_us()
        with write_session(self._sessions) as session:
            row = locked_job_row(session, job_id)
            if row is None or row.state != JobState.RUNNING.value:
                return
            files = JobFiles(Path(row.folder))
            attempt, limit = row.attempt, 1 + row.max_retries
            state, reason, outputs = JobState.FAILED, f"attempt {attempt} failed: {status.detail}", {}
            if status.succeeded and not row.stop_kind:
                # It exited 0 before any SIGTERM went out: a cancel requested meanwhile came too late
                # to stop it, and its outputs (a registered model version, say) are real.
                state, reason, outputs = JobState.SUCCEEDED, "exit code 0", read_outputs(files)
                if row.cancel_requested:
                    reason = f"{reason}; {row.cancel_reason} came after the job had ended"
            elif row.cancel_requested:
                state, reason = JobState.CANCELLED, row.cancel_reason
            elif row.stop_kind == "timeout":  # the row's, not memory's: it survives a restart
                reason = f"timeout after {_seconds(row.timeout_s)}s"
            elif status.launch_failed:
                reason = status.detail
            elif attempt < limit:
                state, reason = JobState.RETRYING, f"{reason}; retry {attempt} of {row.max_retries}"
            elif row.max_retries:
                reason = f"{reason}; no retries left ({limit} attempts)"
            terminal = state is not JobState.RETRYING
            # Logged before the commit: a followed log ends once the job is terminal and drained.
            files.append_log(f"attempt {attempt} ended ({status.detail}); job {state.value}: {reason}")
            transition(
                session, row, state, reason, actor=SUPERVISOR_ACTOR, at_us=at, devices=[], process_ref="",
                pid=0, exit_code=status.code, outputs=outputs, finished_at_us=at if terminal else 0,
                stop_kind="", stop_sent_at_us=0,
            )  # fmt: skip
            run_id = row.run_id
        # Other jobs run as the same job user must not enter it until its next attempt (job_user.py).
        with contextlib.suppress(OSError):
            files.close_to_job_user()
        if terminal and run_id:
            self._end_run(run_id, state, at)

    # Admission -----------------------------------------------------------------------------------------

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
                    self._reject(job.job_id, f"the stored job cannot be scheduled: {exc}")
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
            taken = False
            with self._each_job(decision.job_id, "start"):
                if isinstance(decision, Reject):
                    self._reject(decision.job_id, decision.reason)
                elif uids is None or not uids.none_left(decision.job_id, JobFiles(folders[decision.job_id])):
                    taken = not self._launch(decision.job_id, decision.devices)
            if taken:
                # Another supervisor started a job on its devices since this plan was read: the plan is
                # stale, and a job behind this one must not pass it on what is left (strict order, or a
                # backfill reservation computed without that job). The next tick plans again.
                return

    def _reject(self, job_id: str, reason: str) -> None:
        at = now_us()
        with write_session(self._sessions) as session:
            row = locked_job_row(session, job_id)
            if row is None or JobState(row.state) not in WAITING:
                return
            files = JobFiles(Path(row.folder))
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
        """Starts the next attempt of ``job_id`` on ``devices``, unless it no longer waits to. False only
        when it still waits because one of ``devices`` was taken meanwhile (module doc)."""
        at = now_us()
        with read_session(self._sessions) as session:
            row = session.get(JobRow, job_id)
            if row is None or JobState(row.state) not in WAITING or row.cancel_requested:
                return True
            unreadable = _unreadable_spec(row)
        if unreadable:  # every attempt would fail on it, and a RUNNING job without a process is stuck
            self._reject(job_id, unreadable)
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
            if devices:  # first, before the job's row (_lock_devices)
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
        launch = _launch_of(row, self._settings, user)
        launch.files.append_log(reason)
        try:
            # The file the job reads its spec from is written again from the job's row before every
            # attempt: the row is the job, and the copy written at submission is not what a start may
            # rely on (the row can reach the disk before it in a machine crash, leaving a torn or empty
            # file that every attempt would fail to parse, with a traceback as the only reason).
            launch.files.write_spec(spec_to_json(launch.spec))
            token = None
            if self._job_token is not None and not sets_token(launch.spec.env):  # never the admin token
                token = launch.files.write_token(self._job_token(job_id, run_id))
            if launch.user is not None:  # its work folder, token and spec: before the checkpoint path is read
                launch.files.open_to(launch.user)
            env = LaunchEnv(
                job_id=job_id,
                attempt=attempt,
                spec_path=launch.files.spec,
                checkpoint_dir=launch.files.checkpoints,
                control_plane_addr=self._settings.control_plane_addr or self._address(),
                tracking_experiment=launch.spec.experiment or launch.spec.name,
                run_id=run_id,
                devices=devices,
            )
            variables = env.to_env()
            if token is not None:
                variables[TOKEN_FILE] = str(token)
            handle = self._executor.launch(launch, attempt, devices, variables)
        except (OSError, ValueError) as exc:  # ValueError: exec refuses a NUL in an argument or variable
            launch.files.append_log(f"error: cannot launch: {exc}")
            self._finish(job_id, ExitStatus(NOT_EXECUTABLE_EXIT, f"cannot launch: {exc}", launch_failed=True))
            return True
        self._handles[job_id] = handle
        with write_session(self._sessions) as session:
            row = locked_job_row(session, job_id)
            if row is not None:
                row.process_ref, row.pid = handle.ref, handle.pid or 0
        return True

    def _free_uid(self, job_id: str, files: JobFiles) -> JobUser | None:
        """The job user of the next attempt of ``job_id`` (``uid_range.py``), None while none is free."""
        assert self._uids is not None
        return self._uids.next_user(job_id, files.folder, files.append_log)

    # Tracking ------------------------------------------------------------------------------------------

    def _end_run(self, run_id: str, state: JobState, at_us: int) -> None:
        if not end_run(self._tracking, run_id, state, at_us, actor=SUPERVISOR_ACTOR):
            self._runs_left = True

    def _create_run(self, row: JobRow) -> str:
        """The job's run (``runs.create_job_run``); a seam where a test injects a cancel that lands while
        the run is created."""
        return create_job_run(self._tracking, row)


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
    is configuration, not a table). Taken before the job's row, as the first lock of the transaction; no
    other transaction takes it, so no two wait on each other in crossing orders."""
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


def _launch_of(row: JobRow, settings: JobsSettings, user: JobUser | None = None) -> JobLaunch:
    """The job of ``row`` as the executor takes it; ``user`` the attempt's (default: the job user)."""
    user = user or settings.job_user
    own = user is not None and settings.job_uid_range is not None and user.uid in settings.job_uid_range
    return JobLaunch(row.job_id, spec_from_dict(row.spec), JobFiles(Path(row.folder)), user, own)


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


def _seconds(value: float) -> str:
    return f"{value:g}"
