"""The jobs core and one supervisor tick on each supported database (SQLite and PostgreSQL): queue
order, cancel, state filters and pages, audit entries in the same transaction, and a job's tracking run
ending with the job however it ends."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeAlias

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import jobs_pb2 as pb
from clients.aether.v1 import tracking_pb2
from clients.errors import InvalidArgument
from control_plane.audit.tables import AuditEntryRow
from control_plane.db import (
    create_db_engine,
    create_session_factory,
    read_session,
    upgrade_to_head,
    write_session,
)
from control_plane.features.registry import FeatureRegistry
from control_plane.jobs.executor import LocalExecutor
from control_plane.jobs.service import JobService
from control_plane.jobs.spec import spec_from_mapping
from control_plane.jobs.supervisor import Supervisor
from control_plane.jobs.tables import JobRow
from control_plane.offline.store import OfflineStore
from control_plane.tracking.store import TrackingStore
from tests.integration.jobs.conftest import (
    JOB_MODULE,
    REPO_ROOT,
    job_spec,
    jobs_settings,
    process_alive,
    wait_for,
)
from tests.support.pool_watch import SecondConnections
from tests.unit.offline.builders import create_view, ensure_entity, feature_spec

Parts: TypeAlias = tuple[JobService, Supervisor, "sessionmaker[Session]"]


@pytest.fixture
def parts(tmp_path: Path, db_url: str) -> Iterator[Parts]:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    sessions = create_session_factory(engine)
    settings = jobs_settings(tmp_path, gpus="1")
    supervisor = Supervisor(sessions, settings, LocalExecutor(cwd=REPO_ROOT), lambda: "127.0.0.1:1")
    service = JobService(
        sessions, settings, FeatureRegistry(sessions, ()), OfflineStore(str(tmp_path / "offline"))
    )
    yield service, supervisor, sessions
    for job in service.list([pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING])[0]:
        service.cancel(job.job_id, actor="cleanup")

    def settled() -> bool:
        supervisor.tick()
        return not service.list([pb.JOB_STATE_RUNNING])[0]

    wait_for(settled, timeout=15)
    engine.dispose()


def test_queue_order_cancel_and_listing(parts: Parts) -> None:
    service, supervisor, sessions = parts
    low = service.submit(spec_from_mapping(job_spec("low", "--sleep", "30", gpus=1)), actor="a")
    high = service.submit(spec_from_mapping(job_spec("high", "--sleep", "30", gpus=1, priority=5)), actor="a")
    third = service.submit(spec_from_mapping(job_spec("third", gpus=1)), actor="b")
    assert service.cancel(third.job_id, "nope", actor="b").state == pb.JOB_STATE_CANCELLED

    supervisor.tick()
    assert service.get(high.job_id).state == pb.JOB_STATE_RUNNING  # higher priority first
    assert service.get(low.job_id).state == pb.JOB_STATE_QUEUED  # the single device is taken
    assert service.get(third.job_id).attempt == 0

    page, token = service.list(page_size=2)
    assert [j.spec.name for j in page] == ["third", "high"] and token
    rest, token = service.list(page_size=2, page_token=token)
    assert [j.spec.name for j in rest] == ["low"] and token == ""
    assert [j.job_id for j in service.list([pb.JOB_STATE_QUEUED, pb.JOB_STATE_CANCELLED])[0]] == [
        third.job_id, low.job_id,
    ]  # fmt: skip
    with read_session(sessions) as session:
        audited = session.scalar(
            select(func.count()).select_from(AuditEntryRow).where(AuditEntryRow.object_type == "job")
        )
    assert audited == 5  # three submits, one cancel, one start


def _retrying_behind_a_higher_priority_job(parts: Parts, tmp_path: Path) -> pb.Job:
    """A job whose first attempt failed, RETRYING (with its run) while a higher-priority job holds the
    only device."""
    service, supervisor, _ = parts
    release = tmp_path / "release"
    spec = job_spec("flaky", "--until-file", str(release), "--fail-attempts", "1", gpus=1, max_retries=1)
    job = service.submit(spec_from_mapping(spec), actor="a")
    supervisor.tick()
    assert service.get(job.job_id).state == pb.JOB_STATE_RUNNING
    urgent = service.submit(
        spec_from_mapping(job_spec("urgent", "--sleep", "30", gpus=1, priority=5)), actor="a"
    )
    release.touch()

    def retrying() -> bool:
        supervisor.tick()
        return service.get(job.job_id).state == pb.JOB_STATE_RETRYING

    wait_for(retrying)
    assert service.get(urgent.job_id).state == pb.JOB_STATE_RUNNING
    waiting = service.get(job.job_id)
    run = TrackingStore(parts[2]).get_run(waiting.run_id)
    assert run.status == tracking_pb2.RUN_STATUS_RUNNING
    return waiting


def test_cancel_of_a_retrying_job_ends_its_tracking_run(parts: Parts, tmp_path: Path) -> None:
    service, _, sessions = parts
    job = _retrying_behind_a_higher_priority_job(parts, tmp_path)
    cancelled = service.cancel(job.job_id, "not needed", actor="a")
    assert cancelled.state == pb.JOB_STATE_CANCELLED
    run = TrackingStore(sessions).get_run(job.run_id)
    assert run.status == tracking_pb2.RUN_STATUS_KILLED and run.end_time_us == cancelled.finished_at_us


def test_rejection_of_a_retrying_job_ends_its_tracking_run(parts: Parts, tmp_path: Path) -> None:
    _, _, sessions = parts
    job = _retrying_behind_a_higher_priority_job(parts, tmp_path)
    # The control plane restarts with fewer GPUs than the job needs: it can never start again.
    smaller = Supervisor(
        sessions, jobs_settings(tmp_path, gpus="0"), LocalExecutor(cwd=REPO_ROOT), lambda: "127.0.0.1:1"
    )
    # It acts once the lease of the one before (no longer ticking) has expired (TEST_LEASE_S); the
    # fixture's supervisor takes it back likewise to clean up.
    failed = wait_for(
        lambda: smaller.tick() or ((found := parts[0].get(job.job_id)).state == pb.JOB_STATE_FAILED and found)
    )
    assert "requests 1 GPU" in failed.reason
    run = TrackingStore(sessions).get_run(job.run_id)
    assert run.status == tracking_pb2.RUN_STATUS_FAILED and run.end_time_us == failed.finished_at_us


class CancelWhileCreatingTheRun(Supervisor):
    """FAULT: a user's cancel lands after the supervisor created a job's first tracking run and before
    the start commits, a window too narrow to hit from outside."""

    def __init__(self, service: JobService, *args: Any) -> None:
        super().__init__(*args)
        self.service = service

    def _create_run(self, row: JobRow) -> str:
        run_id = super()._create_run(row)
        self.service.cancel(row.job_id, "changed my mind", actor="a")
        return run_id


def test_a_run_created_for_a_start_that_a_cancel_overtook_is_the_jobs_and_ended(
    parts: Parts, tmp_path: Path
) -> None:
    service, _, sessions = parts
    supervisor = CancelWhileCreatingTheRun(
        service,
        sessions,
        jobs_settings(tmp_path, gpus="1"),
        LocalExecutor(cwd=REPO_ROOT),
        lambda: "127.0.0.1:1",
    )
    job = service.submit(spec_from_mapping(job_spec("overtaken", gpus=1)), actor="a")
    supervisor.tick()
    cancelled = service.get(job.job_id)
    assert cancelled.state == pb.JOB_STATE_CANCELLED and cancelled.attempt == 0
    assert cancelled.run_id, "the run created for the start must be stored on the job, not orphaned"
    tracking = TrackingStore(sessions)
    runs, _ = tracking.list_runs(tracking.get_experiment(name="overtaken").experiment_id)
    assert [(run.run_id, run.status) for run in runs] == [(cancelled.run_id, tracking_pb2.RUN_STATUS_KILLED)]


def test_a_start_creates_the_jobs_run_without_holding_a_connection_of_its_own(parts: Parts) -> None:
    # The supervisor created the job's tracking run (the tracking store's write sessions) inside the read
    # session it had checked the job in: a thread holding one pooled connection while it waits for
    # another, which the pool, its connections all held, may never give it.
    service, supervisor, sessions = parts
    job = service.submit(spec_from_mapping(job_spec("started", "--sleep", "30", gpus=1)), actor="a")
    with SecondConnections(sessions.kw["bind"]) as second_connections:
        supervisor.tick()
    started = service.get(job.job_id)
    assert started.state == pb.JOB_STATE_RUNNING and started.run_id
    assert second_connections.found == []


def test_a_cancel_racing_a_start_waits_for_it_and_does_not_overwrite_it(parts: Parts) -> None:
    # The supervisor's start and a cancel both read the job's state and write it. Here the start (this
    # test, standing in for it) holds its write open while the cancel comes in; the cancel must decide from
    # the started job (ask the supervisor to stop it), not from the QUEUED row it would otherwise have read
    # and write CANCELLED over RUNNING, which leaves a process running for a job that says it ended.
    service, _, sessions = parts
    job = service.submit(spec_from_mapping(job_spec("racer", gpus=1)), actor="a")
    answers: list[pb.Job] = []
    with write_session(sessions) as session:
        row = session.get(JobRow, job.job_id, with_for_update=True)
        assert row is not None and row.state == "QUEUED"
        row.state, row.reason = "RUNNING", "started by the test"
        session.flush()  # the row is written (and locked) before the cancel starts
        cancel = threading.Thread(target=lambda: answers.append(service.cancel(job.job_id, actor="b")))
        cancel.start()
        cancel.join(timeout=1.0)  # a cancel that does not wait for this transaction ends here
    cancel.join(timeout=30)
    assert [a.state for a in answers] == [pb.JOB_STATE_RUNNING]
    stored = service.get(job.job_id)
    assert (stored.state, stored.cancel_requested) == (pb.JOB_STATE_RUNNING, True)


def test_a_job_that_ended_0_before_its_cancel_took_effect_succeeds_with_its_outputs(parts: Parts) -> None:
    """The cancel arrives after the job exited 0 but before the supervisor saw it: no SIGTERM went out,
    so the job finished on its own; it is SUCCEEDED with its outputs (its model may be registered)."""
    service, supervisor, sessions = parts
    spec = spec_from_mapping(job_spec("quick", "--outputs", '{"model": "churn"}'))
    job = service.submit(spec, actor="a")
    supervisor.tick()  # starts it
    with read_session(sessions) as session:
        row = session.get(JobRow, job.job_id)
        assert row is not None and row.state == "RUNNING"
        launcher, folder = row.pid, Path(row.folder)
    wait_for(lambda: (folder / "attempt-1.exit.json").exists() and not process_alive(launcher))
    assert service.cancel(job.job_id, "too late", actor="b").cancel_requested
    supervisor.tick()
    done = service.get(job.job_id)
    assert done.state == pb.JOB_STATE_SUCCEEDED, done.reason
    assert dict(done.outputs) == {"model": "churn"}
    assert done.reason == "exit code 0; cancelled by b: too late came after the job had ended"


def test_max_retries_past_the_cap_is_invalid_on_every_backend(parts: Parts) -> None:
    """A uint32 max_retries above 2**31 - 1 was stored on SQLite and failed INTERNAL on PostgreSQL
    (its column is a signed 32-bit integer): both refuse it, naming the field and the cap."""
    service, _, _ = parts
    with pytest.raises(InvalidArgument, match=r"max_retries 3000000000 exceeds 1000"):
        service.submit(spec_from_mapping(job_spec("many", max_retries=3_000_000_000)), actor="a")
    assert service.list()[0] == []


def test_entity_rows_paths_no_file_can_have_are_invalid_without_a_datasets_root(
    parts: Parts, tmp_path: Path
) -> None:
    # With no datasets root to confine them to, the path went straight to is_file(): a name too long was
    # INTERNAL, a NUL byte 'not found'.
    service, _, sessions = parts
    registry = FeatureRegistry(sessions, ())
    ensure_entity(registry)
    create_view(registry, feature_spec("activity"))
    for path, message in [("a\x00b.parquet", "contains a NUL byte"), ("a" * 5000, "cannot be looked up")]:
        dataset = {"point_in_time": {"entity_rows_path": path, "features": ["activity"]}}
        with pytest.raises(InvalidArgument, match=rf"dataset\.point_in_time\.entity_rows_path {message}"):
            service.submit(spec_from_mapping(job_spec("rows", dataset=dataset)), actor="a")


def test_a_stored_job_the_supervisor_cannot_handle_fails_or_is_skipped_and_the_others_run(
    parts: Parts, caplog: pytest.LogCaptureFixture
) -> None:
    """FAULT: rows an older control plane stored, which Submit now refuses, so written here in SQL: a
    timeout of 1e303 s (its microseconds overflowed and every tick failed: no job was scheduled again,
    across restarts too) and a spec that no longer parses. Each such job fails with its reason; one
    RUNNING that cannot be re-adopted is logged once; the job queued behind them all runs."""
    service, supervisor, sessions = parts
    huge = service.submit(spec_from_mapping(job_spec("huge", timeout_s=60)), actor="a")
    unreadable = service.submit(spec_from_mapping(job_spec("unreadable")), actor="a")
    stuck = service.submit(spec_from_mapping(job_spec("stuck")), actor="a")
    fine = service.submit(spec_from_mapping(job_spec("fine", timeout_s=60, gpus=1)), actor="a")
    broken_spec = {"name": "x", "entrypoint": {"module": JOB_MODULE}, "no_such_field": 1}
    with write_session(sessions) as session:
        session.execute(update(JobRow).where(JobRow.job_id == huge.job_id).values(timeout_s=1e303))
        session.execute(update(JobRow).where(JobRow.job_id == unreadable.job_id).values(spec=broken_spec))
        session.execute(
            update(JobRow)
            .where(JobRow.job_id == stuck.job_id)
            .values(spec=broken_spec, state="RUNNING", attempt=1, attempt_started_at_us=1)
        )

    with caplog.at_level(logging.ERROR, logger="aether.jobs"):
        supervisor.tick()
        supervisor.tick()
    failed = service.get(huge.job_id)
    assert failed.state == pb.JOB_STATE_FAILED
    assert failed.reason == (
        "the stored job cannot be scheduled: timeout_s must be a number of seconds from 0 (no timeout) "
        "to 31536000 (one year), got 1e+303"
    )
    with read_session(sessions) as session:  # read as a row: a Job message needs the spec
        row = session.get(JobRow, unreadable.job_id)
        assert row is not None and (row.state, row.attempt) == ("FAILED", 0)
        assert row.reason.startswith("the stored job spec cannot be read: ") and "no_such_field" in row.reason
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot watch job {stuck.job_id}; the other jobs go on"
    ]

    def succeeded() -> bool:
        supervisor.tick()
        return service.get(fine.job_id).state == pb.JOB_STATE_SUCCEEDED

    wait_for(succeeded)
    with write_session(sessions) as session:  # nothing runs for it: let the fixture's clean-up pass it by
        session.execute(update(JobRow).where(JobRow.job_id == stuck.job_id).values(state="FAILED"))


def test_outputs_json_has_no_number_can_hold_ends_the_job_and_frees_its_devices(parts: Parts) -> None:
    """A job's ``outputs.json`` is whatever it wrote: Python's ``json.dumps`` writes a diverged loss as
    ``NaN`` (the training SDK's ``write_outputs`` did too), and a number too large for a float parses as
    an infinity. Stored as parsed, PostgreSQL's JSON refused the job's end on every tick: the job stayed
    RUNNING, holding its GPU, and the queue behind it waited for good. An integer that large parses, but
    no double holds it, and ``google.protobuf.Struct`` refused it on every read of the job (``Get``, and
    ``List`` of any page holding it). Such a value is kept as its text, and the job ends."""
    service, supervisor, _ = parts
    huge = "1" + "0" * 400  # an integer no double holds: Struct refused it on every read of the job
    outputs = (
        f'{{"model": "churn", "loss": NaN, "best": [Infinity, -Infinity, 0.5], "big": 1e999, "n": {huge}}}'
    )
    job = service.submit(spec_from_mapping(job_spec("diverged", "--outputs", outputs, gpus=1)), actor="a")
    behind = service.submit(spec_from_mapping(job_spec("behind", gpus=1)), actor="a")

    def ended(job_id: str) -> bool:
        supervisor.tick()
        return service.get(job_id).state in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED)

    wait_for(lambda: ended(job.job_id), timeout=15)
    done = service.get(job.job_id)
    assert done.state == pb.JOB_STATE_SUCCEEDED, done.reason
    assert dict(done.outputs) == {
        "model": "churn", "loss": "NaN", "best": ["Infinity", "-Infinity", 0.5], "big": "1e999", "n": huge,
    }  # fmt: skip
    assert [listed.job_id for listed in service.list()[0]] == [behind.job_id, job.job_id]
    log = service.log_file(job.job_id)[0].read_bytes()
    assert b"outputs.json holds numbers no double holds (NaN, an infinity, past 1.8e308): kept as text" in log
    wait_for(lambda: ended(behind.job_id), timeout=15)
    assert service.get(behind.job_id).state == pb.JOB_STATE_SUCCEEDED


def test_outputs_json_with_text_no_string_can_hold_still_reads_and_lists(parts: Parts) -> None:
    """A JSON escape may name half of a surrogate pair (``"\\ud800"``), which is no character: stored as
    parsed, every read of the job failed (``Get``, ``Watch``, and ``List`` of any page holding it, so
    ``aetherctl jobs list`` failed for everyone) with a UnicodeEncodeError, as INTERNAL. Such halves are
    kept as U+FFFD, said in the job's log."""
    service, supervisor, _ = parts
    outputs = r'{"model": "caf\u00e9 \ud800", "\udc00": ["ok \ud83d\ude00", 1]}'
    job = service.submit(spec_from_mapping(job_spec("halves", "--outputs", outputs)), actor="a")

    def ended() -> bool:
        supervisor.tick()
        return service.get(job.job_id).state in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED)

    wait_for(ended, timeout=15)
    done = service.get(job.job_id)
    assert done.state == pb.JOB_STATE_SUCCEEDED, done.reason
    assert dict(done.outputs) == {"model": "café \ufffd", "\ufffd": ["ok \U0001f600", 1.0]}
    assert [listed.job_id for listed in service.list()[0]] == [job.job_id]
    log = service.log_file(job.job_id)[0].read_bytes()
    assert b"outputs.json holds text that is no Unicode (half a surrogate pair): kept as U+FFFD" in log
