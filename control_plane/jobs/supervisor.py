"""The control plane's job loop: on every tick (and whenever the service wakes it) it

1. re-adopts RUNNING jobs it holds no handle for (after a control-plane restart): the executor finds the
   recorded process (pid + start time, so a reused pid is not mistaken for it), or, when the control
   plane died before recording it, the process that claimed the attempt's pid file (``identity.py``);
   if it is gone, the launcher's exit record says how it ended, and without one the attempt counts as
   failed once what is left of its process group is killed. Devices are freed only then: an attempt
   whose process was never found is one the executor made sure never starts, and goes back to the
   queue without counting against the job's retries (its code never ran). A stop in progress
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

Supervisors sharing a database (a second control plane on the same ``AETHER_DB_URL``, an old process
still alive during a restart) act one at a time: a tick does anything only while its supervisor holds
the leader lease (``lease.py``), renewed as it goes, taken over by another once it has expired, and
every decision's write transaction is fenced by the lease's epoch, so a supervisor that lost it (paused
past its expiry) commits nothing after another has taken over; it then forgets its attempts, which the
new leader re-adopts. Before the lease, both launched, re-adopted, stopped and ended the same jobs. A
device is moreover never handed out twice even by two supervisors acting at once (``admission.py``).
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
from control_plane.jobs import staging
from control_plane.jobs.admission import Admission
from control_plane.jobs.attempts import Attempts
from control_plane.jobs.executor import Executor
from control_plane.jobs.lease import LeaseLost, SupervisorLease
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
        lease: SupervisorLease | None = None,
    ) -> None:
        """``lease``: the supervisor's hold on the leader lease; default its own, of ``settings``' timings."""
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
        # And of the next sweep of the staging folders of submits (staging.py): by every supervisor,
        # leading or not, since each looks at its own host's jobs folder.
        self._next_staging_sweep = 0.0
        # Jobs whose handling failed with an error already logged with its traceback: a job that fails
        # the same way on every tick is logged once, not once a tick.
        self._logged: set[str] = set()
        self._lease = lease or SupervisorLease(sessions, settings.lease_s, settings.lease_renew_s)
        # job_token mints a job's token for (job id, run id) when auth is on (control_plane.api.job_tokens).
        self._attempts = Attempts(
            sessions, settings, executor, control_plane_addr, job_token, self._end_run, self._lease.fence
        )
        self._admission = Admission(
            sessions,
            settings,
            self._attempts,
            each_job=self._each_job,
            stopping=self._stopping,
            create_run=self._create_run,
            end_run=self._end_run,
            fence=self._lease.fence,
        )

    # Lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="aether-jobs-supervisor", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Ends the loop after the tick in progress, and gives the lease up so that another supervisor
        takes over at once. Running jobs keep running."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self._lease.release()
        except Exception:  # it expires by itself: another supervisor takes over lease_s later
            _log.exception("cannot give the jobs lease up")

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception:  # one bad tick (e.g. the database briefly locked) must not end the loop
                _log.exception("job supervisor tick failed")
            # Never longer than the renewal period: the lease is renewed by the ticks.
            self._wake.wait(min(self._settings.tick_s, self._settings.lease_renew_s))
            self._wake.clear()

    def tick(self) -> None:
        """One pass while this supervisor holds the lease: re-adopt, watch, admit (module doc), after ending
        the runs a crash left running. Without the lease it does nothing; having lost it, it forgets the
        attempts it watched (the new leader re-adopts them). Every ``run_sweep_s`` it also sweeps the
        staging folders a failed or crashed submit left (``staging.py``), lease or not."""
        if time.monotonic() >= self._next_staging_sweep:
            self._next_staging_sweep = time.monotonic() + self._settings.run_sweep_s
            staging.sweep_logging_errors(self._settings.folder, self._sessions)
        try:
            if self._lease.hold():
                self._lead()
                return
        except LeaseLost as lost:
            _log.warning("%s; the supervisor that took over carries on", lost)
        self._attempts.forget()

    def _lead(self) -> None:
        if self._runs_left or time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + self._settings.run_sweep_s
            self._end_left_runs()
        with read_session(self._sessions) as session:
            running = list(session.scalars(select(JobRow).where(JobRow.state == JobState.RUNNING.value)))
        for row in running:
            if self._stopping.is_set():
                return
            if not self._lease.hold():  # renewed when due, however long the tick
                raise LeaseLost(f"the jobs lease of this supervisor ({self._lease.holder}) went to another")
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
        except LeaseLost:  # not this job's fault: the tick ends (tick)
            raise
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
