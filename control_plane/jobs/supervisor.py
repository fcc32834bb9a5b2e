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

Steps 1 and 2 are ``attempts.py``, step 3 ``admission.py``. Every transition is persisted with its reason
(``store.transition``) before the loop acts on the next job, so a crash of the control plane at any point
loses nothing: a job is RUNNING in the database from before its process starts until after it has
ended, and its process identity is recorded right after the start (and, before the job starts, in the
attempt's pid file by the launcher itself). A job's tracking run is written apart from the job, so the
first tick of every supervisor ends the runs a crash left RUNNING for jobs that had ended, and a start
reuses a run a crashed start created (``runs.py``). Stopping the supervisor leaves running jobs alone;
the next supervisor re-adopts them.

One supervisor per database is the design (the control plane is one process; replicas would need a
leader lease), but nothing enforces it: a second control plane started on the same ``AETHER_DB_URL``, or
an old process still alive during a restart, runs a supervisor of its own. Whatever runs, a device is
never handed out twice (``admission.py``). Only the devices are safe so: two supervisors still each
watch (and may stop) the other's attempts, a start the other has not yet recorded may be given up by it
as lost (``executor.adopt``), and two jobs started by different supervisors may get the same uid of a
job uid range.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db import read_session
from control_plane.jobs.admission import Admission
from control_plane.jobs.attempts import Attempts
from control_plane.jobs.executor import Executor
from control_plane.jobs.runs import create_job_run, end_left_runs, end_run
from control_plane.jobs.settings import JobsSettings, open_jobs_folder
from control_plane.jobs.store import SUPERVISOR_ACTOR, JobState
from control_plane.jobs.tables import JobRow
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
        self._tracking = TrackingStore(sessions)
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
        # job_token mints a job's token for (job id, run id) when auth is on (control_plane.api.job_tokens).
        self._attempts = Attempts(sessions, settings, executor, control_plane_addr, job_token, self._end_run)
        self._admission = Admission(
            sessions,
            settings,
            self._attempts,
            each_job=self._each_job,
            stopping=self._stopping,
            create_run=self._create_run,
            end_run=self._end_run,
        )

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
                self._attempts.watch_running(row)
        if not self._stopping.is_set():
            self._admission.admit()

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

    # Tracking ------------------------------------------------------------------------------------------

    def _end_run(self, run_id: str, state: JobState, at_us: int) -> None:
        if not end_run(self._tracking, run_id, state, at_us, actor=SUPERVISOR_ACTOR):
            self._runs_left = True

    def _create_run(self, row: JobRow) -> str:
        """The job's run (``runs.create_job_run``); a seam where a test injects a cancel that lands while
        the run is created."""
        return create_job_run(self._tracking, row)
