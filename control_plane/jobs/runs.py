"""A job's tracking run ends with the job: FINISHED, FAILED or KILLED as the job SUCCEEDED, FAILED or was
CANCELLED. Every path that makes a job with a run terminal goes through :func:`end_run`: an attempt's
end, a cancel or a rejection while the job waits between attempts, and a cancel that lands while its
first start creates the run. Otherwise the run would stay RUNNING forever, on dashboards and in
comparisons, for a job that is long gone.

The job row and its run are written in separate transactions, so a control plane that dies between
them must not leave them apart:

* The job's end commits first, then its run ends. A run left RUNNING by a crash in between (or by a
  tracking write that failed) is ended by :func:`end_left_runs`, which the supervisor runs when it starts,
  after such a failure of its own, and every ``JobsSettings.run_sweep_s`` (30 s) for those of other
  writers (a cancel through the API whose run's end failed). Ending is idempotent
  (``TrackingStore.end_run_once``), so the sweep and a late :func:`end_run` change the run once.
* A first start creates the run, then records it on the job as the job starts. The run's id is reserved
  in the job's folder before the run is created (:func:`reserve_run_id`) and creating it again is a
  no-op, so the next start reuses a run a crashed start created instead of leaving it orphaned; a job
  that ends without starting again (cancel, rejection) takes it over through :func:`leftover_run`.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

from google.protobuf import json_format
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import tracking_pb2
from clients.errors import AlreadyExists
from control_plane.db import read_session
from control_plane.jobs.files import JobFiles
from control_plane.jobs.identity import claim
from control_plane.jobs.store import SUPERVISOR_ACTOR, TERMINAL, JobState, now_us, spec_from_dict
from control_plane.jobs.tables import JobRow
from control_plane.tracking.store import TrackingStore
from control_plane.tracking.tables import RunRow
from control_plane.training.spec import hyperparameter_text

_log = logging.getLogger("aether.jobs")

_RUN_STATUS = {
    JobState.SUCCEEDED: tracking_pb2.RUN_STATUS_FINISHED,
    JobState.FAILED: tracking_pb2.RUN_STATUS_FAILED,
    JobState.CANCELLED: tracking_pb2.RUN_STATUS_KILLED,
}


def end_run(tracking: TrackingStore, run_id: str, state: JobState, at_us: int, *, actor: str) -> bool:
    """Ends run ``run_id`` of a job that became ``state`` (terminal) at ``at_us``, unless it has ended so
    already. Called once the job's transition committed; a tracking failure is logged, not raised: the
    job's own end must stand. False then, so that the caller can have :func:`end_left_runs` try again."""
    try:
        tracking.end_run_once(run_id, _RUN_STATUS[state], at_us, actor=actor)
    except Exception:
        _log.exception("cannot end tracking run %s", run_id)
        return False
    return True


def end_left_runs(sessions: sessionmaker[Session], tracking: TrackingStore, *, actor: str) -> bool:
    """Ends every RUNNING run of a terminal job with the job's status at the job's end: the runs a
    control plane left running when it stopped between ending a job and ending its run. Idempotent;
    True when each was ended (or nothing was left)."""
    with read_session(sessions) as session:
        left = session.execute(
            select(JobRow.job_id, JobRow.run_id, JobRow.state, JobRow.finished_at_us)
            .join(RunRow, RunRow.run_id == JobRow.run_id)
            .where(JobRow.state.in_([state.value for state in TERMINAL]), RunRow.status == "RUNNING")
        ).all()
    ended = True
    for job_id, run_id, state, finished_at_us in left:
        _log.info(
            "ending run %s of job %s (%s), left running by a stopped control plane", run_id, job_id, state
        )
        ended &= end_run(tracking, run_id, JobState(state), finished_at_us or now_us(), actor=actor)
    return ended


def reserve_run_id(files: JobFiles) -> str:
    """The id the job's run has, or gets when it is created: reserved in the job's folder on first use
    (atomically: ``identity.claim``), the same on every later call."""
    record = {"run_id": uuid.uuid4().hex}
    found = claim(files.run_file, record)
    return str((found or record)["run_id"])


def leftover_run(session: Session, files: JobFiles) -> str:
    """The run a start of this job created without recording it on the job (the control plane died in
    between), else "". For a job that ends before it starts again, which then takes the run over."""
    try:
        run_id = str(json.loads(files.run_file.read_text(encoding="utf-8"))["run_id"])
    except (OSError, ValueError, KeyError, TypeError):  # none reserved: no start got as far
        return ""
    return run_id if session.scalar(select(RunRow.id).where(RunRow.run_id == run_id)) is not None else ""


def create_job_run(tracking: TrackingStore, row: JobRow) -> str:
    """The job's tracking run (created at its first start, reused by later attempts); "" when the
    tracking store refuses (the job still runs, without a run). Created under the id reserved in the
    job's folder, and only if it does not exist: a start that died after creating it and before
    recording it on the job leaves it to this one (``runs.py``). An ``OSError`` naming the file when the
    id cannot be reserved (a full disk): the job waits and its start is tried again (``admission.py``),
    rather than running without a run for good. That error was caught here as the store's, and the
    warning written to the job's log, on the same full disk, raised instead of it, naming only the log."""
    spec = spec_from_dict(row.spec)
    experiment_name = spec.experiment or spec.name
    files = JobFiles(Path(row.folder))
    try:
        run_id = reserve_run_id(files)
    except OSError as exc:
        raise OSError(
            f"cannot reserve the job's tracking run id in {files.run_file}: {exc.strerror or exc}"
        ) from exc
    try:
        try:
            experiment = tracking.create_experiment(experiment_name, actor=SUPERVISOR_ACTOR)
        except AlreadyExists:
            experiment = tracking.get_experiment(name=experiment_name)
        # The same spelling the training SDK and model versions use (e.g. 32.0 from a Struct -> "32"),
        # since run params are immutable and a second spelling would be refused.
        params = {
            key: hyperparameter_text(key, value)
            for key, value in json_format.MessageToDict(spec.hyperparameters).items()
        }
        start = tracking_pb2.RunStart(
            experiment_id=experiment.experiment_id,
            name=spec.name,
            params=params,
            tags={"aether.job_id": row.job_id},
        )
        # A batch that starts a run creates it unless it exists (in the same experiment).
        tracking.log_batch([tracking_pb2.RunBatch(run_id=run_id, start=start)], actor=SUPERVISOR_ACTOR)
        return run_id
    except Exception as exc:
        files.append_log(f"warning: no tracking run: {exc}")
        _log.exception("cannot create the tracking run of job %s", row.job_id)
        return ""
