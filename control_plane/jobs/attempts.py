"""The attempts a supervisor runs and watches (``supervisor.py`` says when it does what): starting the
process of an attempt admission has made RUNNING, re-adopting one whose process outlived its control
plane, watching each for its end and for a cancel or a timeout (SIGTERM, then SIGKILL after the grace
period), and ending it: the job SUCCEEDED with its outputs, FAILED, CANCELLED, or back to the queue as
RETRYING while attempts <= 1 + max_retries.

Every transition is persisted with its reason (``store.transition``) before the next job is looked at;
a job is RUNNING in the database from before its process starts until after it has ended, and its
process identity is recorded right after the start (and, before the job starts, in the attempt's pid
file by the launcher itself), so a restarted control plane finds it (``executor.adopt``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from control_plane.db import write_session
from control_plane.jobs.executor import Executor, ExitStatus, JobHandle, JobLaunch
from control_plane.jobs.files import JobFiles, read_outputs
from control_plane.jobs.job_user import JobUser
from control_plane.jobs.launch_env import TOKEN_FILE, LaunchEnv, sets_token
from control_plane.jobs.launcher import NOT_EXECUTABLE_EXIT
from control_plane.jobs.settings import JobsSettings
from control_plane.jobs.spec import spec_to_json
from control_plane.jobs.stops import Stop, due_stop
from control_plane.jobs.store import (
    SUPERVISOR_ACTOR,
    JobState,
    locked_job_row,
    note,
    now_us,
    spec_from_dict,
    transition,
)
from control_plane.jobs.tables import JobRow

_log = logging.getLogger("aether.jobs")

#: Ends a job's tracking run once the job has become terminal: (run id, the job's state, when).
EndRun = Callable[[str, JobState, int], None]
#: Refuses, first thing in a decision's write transaction, to go on when this supervisor has lost its
#: leader lease (``lease.SupervisorLease.fence``: raises ``LeaseLost``).
Fence = Callable[[Session], None]


class Attempts:
    """The running attempts of one supervisor: their handles, and the stops (cancel, timeout) in
    progress. Used from the supervisor's thread only."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: JobsSettings,
        executor: Executor,
        control_plane_addr: Callable[[], str],
        job_token: Callable[[str, str], str] | None,
        end_run: EndRun,
        fence: Fence,
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._executor = executor
        self._address = control_plane_addr
        self._job_token = job_token
        self._end_run = end_run
        self._fence = fence
        self.handles: dict[str, JobHandle] = {}
        self._stops: dict[str, Stop] = {}

    # Starting ------------------------------------------------------------------------------------------

    def start(
        self,
        row: JobRow,
        attempt: int,
        devices: tuple[str, ...],
        run_id: str,
        user: JobUser | None,
        reason: str,
    ) -> bool:
        """Starts the process of attempt ``attempt`` of the job of ``row``, which is RUNNING on
        ``devices`` already (committed), as ``user``; a launch that fails ends the attempt at once (False:
        admission then starts nothing more in that tick)."""
        job_id = row.job_id
        launch = launch_of(row, self._settings, user)
        try:
            launch.files.append_log(reason)
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
        except Exception as exc:
            self._launch_failed(job_id, attempt, launch.files, exc)
            return False
        self.handles[job_id] = handle
        with write_session(self._sessions) as session:
            self._fence(session)
            fresh = locked_job_row(session, job_id)
            if fresh is not None:
                fresh.process_ref, fresh.pid = handle.ref, handle.pid or 0
        return True

    def _launch_failed(self, job_id: str, attempt: int, files: JobFiles, exc: Exception) -> None:
        """Ends attempt ``attempt``, which could not be launched for ``exc``: never retried when it is the
        spec's (:func:`launch_fault_is_the_spec_s`: every attempt would fail alike), else a failed attempt,
        retried while retries remain. The host's faults pass (a full disk, an I/O error, no process slot
        left) and were taken for a missing entrypoint: the job FAILED at once. The control plane's own
        errors too: left RUNNING without a process, the next tick gave the attempt up as never started,
        which spends no retry, and the job went round for good."""
        if launch_fault_is_the_spec_s(exc):
            detail = f"cannot launch: {exc}"
            status = ExitStatus(NOT_EXECUTABLE_EXIT, detail, launch_failed=True)
        elif isinstance(exc, OSError):
            detail = f"cannot launch: {exc}"
            status = ExitStatus(None, detail)
        else:
            _log.exception("cannot launch attempt %d of job %s", attempt, job_id)
            detail = f"cannot launch: {exc!r}"
            status = ExitStatus(None, detail)
        files.append_log_if_possible(f"error: {detail}")
        self.finish(job_id, status)

    def forget(self) -> None:
        """Drops every handle and stop in progress: this supervisor has lost the lease, and the one that
        took it over re-adopts the attempts (their processes run on)."""
        self.handles.clear()
        self._stops.clear()

    # Re-adoption ---------------------------------------------------------------------------------------

    def watch_running(self, row: JobRow) -> None:
        """Watches the RUNNING job of ``row``, re-adopting its attempt first when this supervisor holds
        no handle for it (a restart)."""
        handle = self.handles.get(row.job_id) or self._adopt(row)
        if handle is not None:
            self._watch(row, handle)

    def _adopt(self, row: JobRow) -> JobHandle | None:
        launch = launch_of(row, self._settings)
        # A blank process_ref: the control plane died between starting the attempt and recording it. The
        # executor still finds it, or makes sure it never starts (None): its devices are then free.
        handle = self._executor.adopt(launch, row.attempt, row.process_ref)
        if handle is None and not row.process_ref:
            # The executor made sure that the attempt never starts (Executor.adopt): the job's code never ran.
            status: ExitStatus | None = ExitStatus(
                None, "the control plane stopped while starting it", never_started=True
            )
        elif handle is None:
            status = ExitStatus(None, "lost: the control plane stopped while starting it")
        else:
            status = handle.poll()
        if status is not None:  # it ended while no control plane watched: its exit record says how
            self.finish(row.job_id, status)
            return None
        assert handle is not None
        self.handles[row.job_id] = handle
        if row.stop_kind:  # the SIGTERM went out before the restart: SIGKILL when its grace runs out
            self._stops[row.job_id] = Stop(row.stop_kind, row.stop_sent_at_us)
        with write_session(self._sessions) as session:
            self._fence(session)
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
            self.finish(row.job_id, status)
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
            self._fence(session)
            row = locked_job_row(session, job_id)
            if row is not None and row.state == JobState.RUNNING.value and row.attempt == attempt:
                row.stop_kind, row.stop_sent_at_us = stop.kind, stop.since_us

    # Ending --------------------------------------------------------------------------------------------

    def finish(self, job_id: str, status: ExitStatus) -> None:
        """Ends the running attempt of ``job_id`` that exited with ``status``."""
        self._stops.pop(job_id, None)
        self.handles.pop(job_id, None)
        at = now_us()
        with write_session(self._sessions) as session:
            self._fence(session)
            row = locked_job_row(session, job_id)
            if row is None or row.state != JobState.RUNNING.value:
                return
            files = JobFiles(Path(row.folder))
            attempt, limit = row.attempt, 1 + row.max_retries
            state, reason, outputs = JobState.FAILED, f"attempt {attempt} failed: {status.detail}", {}
            changes: dict[str, int] = {}
            if status.succeeded and not row.stop_kind:
                # It exited 0 before any SIGTERM went out: a cancel requested meanwhile came too late
                # to stop it, and its outputs (a registered model version, say) are real.
                state, reason, outputs = JobState.SUCCEEDED, "exit code 0", read_outputs(files)
                if row.cancel_requested:
                    reason = f"{reason}; {row.cancel_reason} came after the job had ended"
            elif row.stop_kind == "timeout":  # the row's, not memory's: it survives a restart
                # The timeout's SIGTERM went out first: the job failed by its timeout, and a cancel that
                # came while it stopped does not make it CANCELLED (it ended so, as if stopped by choice).
                reason = f"timeout after {_seconds(row.timeout_s)}s"
                if row.cancel_requested:
                    reason = f"{reason}; the cancel ({row.cancel_reason}) came after the timeout's SIGTERM"
            elif row.cancel_requested:
                state, reason = JobState.CANCELLED, row.cancel_reason
            elif status.launch_failed:
                reason = status.detail
            elif status.never_started:
                # Not a run of the job: the job waits for its next attempt as if this one had not been made
                # (its number is spent: its pid file is given up, so a launcher arriving late never starts
                # it). The limit grows by one, and job.spec keeps the max_retries the user asked for.
                state, changes["max_retries"] = JobState.RETRYING, row.max_retries + 1
                reason = (
                    f"attempt {attempt} never started ({status.detail}); not counted as one of the job's"
                    f" {limit} attempts"
                )
            elif attempt < limit:
                state, reason = JobState.RETRYING, f"{reason}; retry {attempt} of {row.max_retries}"
            elif row.max_retries:
                reason = f"{reason}; no retries left ({limit} attempts)"
            terminal = state is not JobState.RETRYING
            # Logged before the commit: a followed log ends once the job is terminal and drained. A log the
            # disk refuses (full) must not keep the job RUNNING: its row holds the reason.
            files.append_log_if_possible(
                f"attempt {attempt} ended ({status.detail}); job {state.value}: {reason}"
            )
            transition(
                session, row, state, reason, actor=SUPERVISOR_ACTOR, at_us=at, devices=[], process_ref="",
                pid=0, exit_code=status.code, outputs=outputs, finished_at_us=at if terminal else 0,
                stop_kind="", stop_sent_at_us=0, **changes,
            )  # fmt: skip
            run_id = row.run_id
        # Other jobs run as the same job user must not enter it until its next attempt (job_user.py).
        with contextlib.suppress(OSError):
            files.close_to_job_user()
        if terminal and run_id:
            self._end_run(run_id, state, at)


def launch_fault_is_the_spec_s(exc: Exception) -> bool:
    """Whether a failure to launch an attempt is the spec's, the same for every attempt: exec refusing a
    NUL byte in an argument (ValueError; Submit refuses them, a row stored before may hold one) or an
    argument list too long for it (E2BIG; the launcher's own environment is fixed, so the length is the
    spec's command). Any other OSError is the host's (a full disk, an I/O error, no process slot)."""
    return isinstance(exc, ValueError) or (isinstance(exc, OSError) and exc.errno == errno.E2BIG)


def launch_of(row: JobRow, settings: JobsSettings, user: JobUser | None = None) -> JobLaunch:
    """The job of ``row`` as the executor takes it; ``user`` the attempt's (default: the job user)."""
    user = user or settings.job_user
    own = user is not None and settings.job_uid_range is not None and user.uid in settings.job_uid_range
    return JobLaunch(row.job_id, spec_from_dict(row.spec), JobFiles(Path(row.folder)), user, own)


def _seconds(value: float) -> str:
    return f"{value:g}"
