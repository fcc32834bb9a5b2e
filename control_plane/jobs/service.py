"""The jobs core behind ``aether.v1.Jobs``: submit, get, list, cancel, and where a job's log is. Plain
data in, messages out, no transport; the supervisor (``supervisor.py``) does everything that happens
after submission on its own loop, and :class:`JobService` wakes it on every change it makes.

Submission refuses what can never run: a malformed spec (INVALID_ARGUMENT), more GPUs than the pool has
(FAILED_PRECONDITION), an unknown feature view, version or feature, or an unknown dataset hash
(NOT_FOUND). An entrypoint that cannot be found is not refused: the job is created and FAILED at once,
with the error in its log, so ``aetherctl jobs logs`` shows what went wrong the same way as for an
entrypoint that fails when it runs.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import jobs_pb2 as pb
from clients.errors import FailedPrecondition, InvalidArgument, NotFound
from clients.files import private_folder
from control_plane.db import keyset, pages, read_session, write_session
from control_plane.jobs.files import JobFiles
from control_plane.jobs.runs import end_run, leftover_run
from control_plane.jobs.settings import JobsSettings
from control_plane.jobs.spec import entrypoint_problem, spec_to_json, validate
from control_plane.jobs.staging import StagedFolder, ensure_in_place
from control_plane.jobs.store import (
    TERMINAL,
    WAITING,
    JobState,
    history,
    job_message,
    job_row,
    note,
    now_us,
    spec_to_dict,
    transition,
)
from control_plane.jobs.tables import JobRow
from control_plane.offline.datasets import read_dataset_record
from control_plane.offline.resolve import ViewCatalog, plan_views
from control_plane.offline.server_paths import confined
from control_plane.offline.store import OfflineStore
from control_plane.tracking.store import TrackingStore

_log = logging.getLogger("aether.jobs")

MAX_PAGE_SIZE = 1000
ROWS_FIELD = "dataset.point_in_time.entity_rows_path"
DEFAULT_PAGE_SIZE = 100
# Newest first, job ids breaking ties (and making the key unique): keyset pages.
_JOB_ORDER = (
    keyset.KeyColumn(JobRow.submitted_at_us, int, descending=True),  # type: ignore[arg-type]
    keyset.KeyColumn(JobRow.job_id, str),  # type: ignore[arg-type]
)


class JobService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: JobsSettings,
        catalog: ViewCatalog,
        offline: OfflineStore,
        wake: Callable[[], None] = lambda: None,
        datasets_root: str | None = None,
    ) -> None:
        """``datasets_root`` is where the offline features service lets a caller's entity rows be
        (:mod:`control_plane.offline.server_paths`): a job whose point-in-time entity rows lie outside it
        is refused at submit, not when the job asks for its training set. None: not checked here."""
        self._sessions = sessions
        self._settings = settings
        self._catalog = catalog
        self._offline = offline
        self._wake = wake
        self.datasets_root = datasets_root
        self._tracking = TrackingStore(sessions)

    # Submission ----------------------------------------------------------------------------------------

    def submit(self, spec: pb.JobSpec, *, actor: str) -> pb.Job:
        spec = validate(spec)
        pool = self._settings.pool
        if spec.gpus > pool.size:
            raise FailedPrecondition(
                f"job {spec.name!r} requests {spec.gpus} GPUs but the pool has {pool.size} "
                f"({pool.source}: {', '.join(pool.devices) or 'no GPUs'})"
            )
        self._check_references(spec)
        problem = entrypoint_problem(spec, self._settings.job_cwd)
        job_id = uuid.uuid4().hex[:12]
        # Written under a staging name, put in place once the row commits (staging.py): a submit whose
        # database write fails leaves no folder, and so no spec with its secrets, behind.
        staged = StagedFolder.create(self._settings.folder / job_id)
        # Set as the transaction's last statement: an exception with it set came from the COMMIT, whose
        # outcome is unknown; without it, the transaction was rolled back before any COMMIT was sent.
        committing = False
        try:
            files = JobFiles(staged.path)
            self._write_files(files, JobFiles(staged.final), spec)
            at = now_us()
            with write_session(self._sessions) as session:
                row = JobRow(
                    job_id=job_id, name=spec.name, spec=spec_to_dict(spec), state=JobState.QUEUED.value,
                    reason=f"submitted by {actor}", gpus=spec.gpus, priority=spec.priority,
                    max_retries=spec.max_retries, timeout_s=spec.timeout_s, attempt=0, devices=[],
                    process_ref="", pid=0, attempt_started_at_us=0, submitted_at_us=at, started_at_us=0,
                    finished_at_us=0, updated_at_us=at, submitted_by=actor, run_id="",
                    folder=str(staged.final), exit_code=None, outputs={}, cancel_requested=False,
                    cancel_reason="",
                )  # fmt: skip
                session.add(row)
                note(session, row, row.reason, actor=actor, at_us=at, action="submit", before=None)
                if problem is not None:
                    files.append_log(f"error: {problem}")
                    transition(
                        session, row, JobState.FAILED, problem, actor=actor, at_us=at, finished_at_us=at
                    )
                session.flush()
                job = job_message(row, history(session, job_id))
                committing = True
        except BaseException:
            if committing:
                _log.warning(
                    "job %s: the commit of its submit failed and may have committed: its folder is left"
                    " as %s, which the sweep puts in place if the job is there and removes if not",
                    job_id, staged.path,
                )  # fmt: skip
            else:
                staged.remove()
            staged.release()
            raise
        try:
            staged.put_in_place()
        except OSError:  # committed: the supervisor puts it in place before the job starts, and the sweep
            _log.exception("job %s: its folder cannot be put in place yet", job_id)
        finally:
            staged.release()
        self._wake()
        return job

    def _write_files(self, files: JobFiles, final: JobFiles, spec: pb.JobSpec) -> None:
        """The job's spec, an empty log and its checkpoints folder, in ``files``' (staging) folder, which
        becomes ``final``'s."""
        uid_range = self._settings.job_uid_range
        # The checkpoints in the job user's work folder; with a range, handed to each attempt's uid as it
        # starts (uid_range.py), the range's first until then.
        work_user = self._settings.job_user
        if uid_range is not None:
            work_user = uid_range.user(uid_range.first, final.work)  # its home: where it will be
        if work_user is not None:
            files.make_work(work_user)
        else:
            private_folder(files.checkpoints)
        files.write_spec(spec_to_json(spec))
        files.open_log().close()

    def _check_references(self, spec: pb.JobSpec) -> None:
        if spec.features:
            plan_views(self._catalog, list(spec.features))
        source = spec.dataset.WhichOneof("source")
        if source == "dataset_hash":
            read_dataset_record(self._offline, spec.dataset.dataset_hash)
        elif source == "point_in_time":
            query = spec.dataset.point_in_time
            plan_views(self._catalog, list(query.features))
            path = query.entity_rows_path
            if self.datasets_root is not None:
                # As the job's GetHistoricalFeatures call will take it: a relative path is under the root.
                path = confined(path, self.datasets_root, ROWS_FIELD)
            if "://" not in path and not _is_file(path, ROWS_FIELD):
                where = "" if path == query.entity_rows_path else f" (looked for at {path})"
                raise NotFound(f"entity rows file {query.entity_rows_path!r} not found{where}")

    # Reads ---------------------------------------------------------------------------------------------

    def get(self, job_id: str) -> pb.Job:
        with read_session(self._sessions) as session:
            return job_message(job_row(session, job_id), history(session, job_id))

    def list(
        self, states: Sequence[int] = (), page_size: int = 0, page_token: str = ""
    ) -> tuple[list[pb.Job], str]:
        """Newest first; ``states`` (proto values) filters. Without history, to keep pages small. Keyset
        pages (the token carries the last job's submission time and id), so jobs submitted, or changing
        state out of a filtered listing, while a client pages neither repeat nor skip a job. A page also
        ends where its jobs fill :data:`pages.MAX_PAGE_BYTES`, always after one: specs have no total
        bound (hyperparameters, commands, env), and 100 jobs of 60 KB made a reply over gRPC's 4 MiB,
        so the listing failed RESOURCE_EXHAUSTED for good. ``page_size`` 0 is the default
        (:data:`DEFAULT_PAGE_SIZE`), above :data:`MAX_PAGE_SIZE` that maximum, as gRPC callers (a uint32)
        get; a negative one, which only an in-process caller can pass, is ``InvalidArgument``."""
        if page_size < 0:
            # It went into LIMIT as is: -1 an empty page without a token, -5 every job (SQLite) or an error.
            raise InvalidArgument(
                f"page_size must be 0 (the default, {DEFAULT_PAGE_SIZE}) to {MAX_PAGE_SIZE}, got {page_size}"
                f" (a larger one is cut to {MAX_PAGE_SIZE})"
            )
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        wanted = sorted({_filter_state(value).value for value in states})
        scope = ",".join(wanted)  # a token is only good for the same state filter
        last = keyset.decode(page_token, "ListJobs", scope, _JOB_ORDER, scope_name="state filter")
        query = select(JobRow).order_by(*keyset.order_by(_JOB_ORDER)).limit(size + 1)
        if wanted:
            query = query.where(JobRow.state.in_(wanted))
        if last is not None:
            query = query.where(keyset.after(_JOB_ORDER, last))
        with read_session(self._sessions) as session:
            rows = list(session.scalars(query))
            jobs = list(pages.fitting(job_message(row) for row in rows[:size]))
        if len(rows) <= len(jobs):
            return jobs, ""
        end = rows[len(jobs) - 1]
        return jobs, keyset.encode("ListJobs", scope, [end.submitted_at_us, end.job_id])

    def make_folders_private(self) -> int:
        """Makes every job's folder, spec and log owner-only (:meth:`JobFiles.make_private`), for jobs
        submitted before they were created so; run at start. Only the folders the job rows name: what
        Aether made, never the jobs folder above them (``AETHER_JOBS_DIR`` may be the user's). Returns how
        many jobs' files changed."""
        with read_session(self._sessions) as session:
            folders = list(session.scalars(select(JobRow.folder)))
        return sum(JobFiles(Path(folder)).make_private() for folder in folders if folder)

    def log_file(self, job_id: str) -> tuple[Path, bool]:
        """The job's log and whether the job has ended (no more lines will come)."""
        with read_session(self._sessions) as session:
            row = job_row(session, job_id)
            return JobFiles(Path(row.folder)).log, JobState(row.state) in TERMINAL

    # Cancel --------------------------------------------------------------------------------------------

    def cancel(self, job_id: str, reason: str = "", *, actor: str) -> pb.Job:
        """A waiting job is CANCELLED now; a running one is marked, and the supervisor stops it (SIGTERM,
        then SIGKILL after the grace period) and marks it CANCELLED once it has stopped; one that had
        already exited 0 before the SIGTERM went out stays SUCCEEDED, with its outputs, and one whose
        timeout's SIGTERM went out first ends FAILED by its timeout (``Attempts.finish``)."""
        why = f"cancelled by {actor}" + (f": {reason}" if reason else "")
        at = now_us()
        with write_session(self._sessions) as session:
            row = job_row(session, job_id, for_update=True)
            state = JobState(row.state)
            if state in TERMINAL:
                raise FailedPrecondition(f"job {job_id} already ended ({state.value}: {row.reason})")
            ended_run = ""
            if state in WAITING:
                ensure_in_place(Path(row.folder))  # read between its submit's commit and rename
                files = JobFiles(Path(row.folder))
                files.append_log(why)
                # Set when an earlier attempt ran (the job was RETRYING), or a start that crashed left one.
                ended_run = row.run_id or leftover_run(session, files)
                transition(
                    session, row, JobState.CANCELLED, why, actor=actor, at_us=at, finished_at_us=at,
                    run_id=ended_run,
                )  # fmt: skip
            elif not row.cancel_requested:
                row.cancel_requested = True
                row.cancel_reason = why
                row.updated_at_us = at
                note(
                    session,
                    row,
                    f"cancel requested: {why}",
                    actor=actor,
                    at_us=at,
                    action="cancel",
                    before=None,
                )
            session.flush()
            job = job_message(row, history(session, job_id))
        if ended_run:
            end_run(self._tracking, ended_run, JobState.CANCELLED, at, actor=actor)
        self._wake()
        return job


def _is_file(path: str, what: str) -> bool:
    """Whether ``path`` is a file; a path no file can have (a NUL byte, a name too long) is the caller's
    mistake, INVALID_ARGUMENT naming ``what``, not the INTERNAL error os.stat's exception made of it."""
    if "\x00" in path:  # is_file() says False: "not found" would hide the cause
        raise InvalidArgument(f"{what} contains a NUL byte, which no file name can hold")
    try:
        return Path(path).is_file()
    except OSError as exc:
        raise InvalidArgument(f"{what} cannot be looked up: {exc.strerror}") from None


def _filter_state(value: int) -> JobState:
    """The state a ``List`` filter names; ``InvalidArgument`` for an unset or unknown one (a caller's
    mistake, e.g. a client built against a newer proto, not a server fault)."""
    try:
        return JobState.from_proto(value)
    except ValueError:
        name = pb.JobState.Name(value) if value in pb.JobState.values() else f"unknown value {value}"
        known = ", ".join(pb.JobState.Name(state.proto) for state in JobState)
        raise InvalidArgument(f"job state filter holds {name}, not a job state; use {known}") from None
