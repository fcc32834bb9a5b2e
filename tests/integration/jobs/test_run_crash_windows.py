"""A control plane killed (SIGKILL) between writing a job and writing its tracking run, on each supported
database: whatever comes next mends the pair, and the run changes once.

* The job's end committed, its run not yet ended: the next control plane ends the run as the job ended.
* The job's first run created, the start not yet recorded on the job: the next start reuses that run,
  and a job that ends before it starts again (cancel, rejection) takes it over and ends it.

To kill the control plane at that point, the test holds up its second write where the database lets it:
on PostgreSQL it holds the lock of the row the write needs; on SQLite, which locks the whole file, a
trigger keeps the write busy (counting, as SQLite cannot sleep). The control plane is killed once the
first write has committed, so inside the held-up second write or just before it: either way, between
the two. Then the hold is released and the test checks that the crash did leave the pair apart."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import jobs_pb2 as pb
from clients.aether.v1 import tracking_pb2 as tpb
from clients.errors import NotFound
from clients.sdk.jobs import JobsClient
from control_plane.audit.tables import AuditEntryRow
from control_plane.db import create_db_engine, create_session_factory, read_session, upgrade_to_head
from control_plane.features.registry import FeatureRegistry
from control_plane.jobs.executor import LocalExecutor
from control_plane.jobs.service import JobService
from control_plane.jobs.spec import spec_from_mapping
from control_plane.jobs.supervisor import Supervisor
from control_plane.jobs.tables import JobRow
from control_plane.offline.store import OfflineStore
from control_plane.tracking.store import TrackingStore
from tests.integration.jobs.conftest import (
    REPO_ROOT,
    ControlPlaneProcess,
    job_spec,
    jobs_settings,
    wait_for,
    wait_state,
)


@contextmanager
def held_up(engine: Engine, table: str, key_column: str, key: str, sqlite_when: str) -> Iterator[None]:
    """Until the block ends, an UPDATE of the row of ``table`` whose ``key_column`` is ``key`` does not
    complete (on SQLite: one that also matches ``sqlite_when``, a trigger condition on OLD and NEW)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(
                text(f"SELECT 1 FROM {table} WHERE {key_column} = :key FOR UPDATE"), {"key": key}
            )
            yield
            connection.rollback()
        return
    assert all(c in "0123456789abcdef" for c in key)  # goes into the trigger's SQL as it is
    with engine.begin() as connection:
        connection.exec_driver_sql(
            f"CREATE TRIGGER test_hold_up BEFORE UPDATE ON {table} "
            f"WHEN OLD.{key_column} = '{key}' AND {sqlite_when} BEGIN "
            "SELECT count(*) FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
            "WHERE i < 10000000000) SELECT i FROM n); END"
        )
    try:
        yield
    finally:
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP TRIGGER test_hold_up")


@pytest.fixture
def database(db_url: str) -> Iterator[tuple[Engine, sessionmaker[Session]]]:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    yield engine, create_session_factory(engine)
    engine.dispose()


def job_state(sessions: sessionmaker[Session], job_id: str) -> str:
    with read_session(sessions) as session:
        row = session.get(JobRow, job_id)
        assert row is not None
        return row.state


def run_updates(sessions: sessionmaker[Session], run_id: str) -> int:
    """Audited changes of the run (its status changes)."""
    with read_session(sessions) as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(AuditEntryRow)
                .where(
                    AuditEntryRow.object_type == "run",
                    AuditEntryRow.object_id == run_id,
                    AuditEntryRow.action == "update",
                )
            )
            or 0
        )


def runs_of(tracking: TrackingStore, experiment: str) -> list[tpb.Run]:
    try:
        experiment_id = tracking.get_experiment(name=experiment).experiment_id
    except NotFound:
        return []
    return tracking.list_runs(experiment_id)[0]


@pytest.mark.parametrize(
    ("args", "state", "status"),
    [
        ((), "SUCCEEDED", tpb.RUN_STATUS_FINISHED),
        (("--exit", "3"), "FAILED", tpb.RUN_STATUS_FAILED),
    ],
    ids=["succeeded", "failed"],
)
def test_a_run_left_running_by_a_crash_after_its_job_ended_is_ended_once_by_the_next_control_plane(
    tmp_path: Path,
    db_url: str,
    database: tuple[Engine, sessionmaker[Session]],
    planes: list[ControlPlaneProcess],
    args: tuple[str, ...],
    state: str,
    status: int,
) -> None:
    engine, sessions = database
    home, release = tmp_path / "home", tmp_path / "release"
    planes.append(first := ControlPlaneProcess(db_url, home))
    with JobsClient(first.address) as client:
        job = client.submit(job_spec("ends", "--until-file", str(release), *args, gpus=1))
        run_id = wait_state(client, job.job_id, pb.JOB_STATE_RUNNING).run_id
    assert run_id
    with held_up(engine, "tracking_runs", "run_id", run_id, "NEW.status != OLD.status"):
        try:
            release.touch()
            wait_for(lambda: job_state(sessions, job.job_id) == state)
        finally:
            first.crash()
    tracking = TrackingStore(sessions)
    assert tracking.get_run(run_id).status == tpb.RUN_STATUS_RUNNING, "the crash missed the window"

    planes.append(second := ControlPlaneProcess(db_url, home))
    wait_for(lambda: tracking.get_run(run_id).status != tpb.RUN_STATUS_RUNNING)
    second.stop()
    # Again: a supervisor that starts later (as the next control plane would) changes nothing.
    Supervisor(sessions, jobs_settings(home), LocalExecutor(cwd=REPO_ROOT), lambda: "127.0.0.1:1").tick()
    with read_session(sessions) as session:
        ended = session.get(JobRow, job.job_id)
        assert ended is not None
    run = tracking.get_run(run_id)
    assert (run.status, run.end_time_us) == (status, ended.finished_at_us)
    assert run_updates(sessions, run_id) == 1


@pytest.mark.parametrize("then", ["restarted", "cancelled", "rejected"])
def test_a_run_created_by_a_start_that_crashed_is_the_jobs_run_not_an_orphan(
    tmp_path: Path,
    db_url: str,
    database: tuple[Engine, sessionmaker[Session]],
    planes: list[ControlPlaneProcess],
    then: str,
) -> None:
    engine, sessions = database
    home = tmp_path / "home"
    service = JobService(
        sessions, jobs_settings(home), FeatureRegistry(sessions, ()), OfflineStore(str(tmp_path / "offline"))
    )
    job = service.submit(spec_from_mapping(job_spec("first-start", gpus=1)), actor="tester")
    tracking = TrackingStore(sessions)
    with held_up(engine, "jobs", "job_id", job.job_id, "NEW.state = 'RUNNING'"):
        planes.append(first := ControlPlaneProcess(db_url, home))
        try:
            created = wait_for(lambda: runs_of(tracking, "first-start"))
        finally:
            first.crash()
    crashed = service.get(job.job_id)
    assert crashed.state == pb.JOB_STATE_QUEUED and crashed.run_id == "", "the crash missed the window"
    assert [run.status for run in created] == [tpb.RUN_STATUS_RUNNING]

    if then == "restarted":
        planes.append(ControlPlaneProcess(db_url, home))
        done = wait_for(lambda: (found := service.get(job.job_id)).state == pb.JOB_STATE_SUCCEEDED and found)
        status = tpb.RUN_STATUS_FINISHED
        # The supervisor ends the run just after it commits the job's end (a transaction of its own).
        wait_for(lambda: tracking.get_run(created[0].run_id).status == status)
    elif then == "cancelled":
        done = service.cancel(job.job_id, "not needed", actor="tester")
        status = tpb.RUN_STATUS_KILLED
    else:  # the next control plane has fewer GPUs than the job needs: it can never start
        smaller = jobs_settings(home, gpus="0")
        nxt = Supervisor(sessions, smaller, LocalExecutor(cwd=REPO_ROOT), lambda: "127.0.0.1:1")
        # It acts once the crashed one's lease has expired (TEST_LEASE_S).
        done = wait_for(
            lambda: nxt.tick() or ((found := service.get(job.job_id)).state == pb.JOB_STATE_FAILED and found)
        )
        nxt.stop()
        status = tpb.RUN_STATUS_FAILED
    run = tracking.get_run(created[0].run_id)
    assert done.run_id == run.run_id and (run.status, run.end_time_us) == (status, done.finished_at_us)
    assert [found.run_id for found in runs_of(tracking, "first-start")] == [run.run_id]
    assert run_updates(sessions, run.run_id) == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the fault is a SQLite trigger
def test_a_run_whose_end_failed_in_a_cancel_is_ended_by_the_running_supervisor(
    tmp_path: Path, database: tuple[Engine, sessionmaker[Session]]
) -> None:
    """The API's cancel ends a waiting job's run itself; when that tracking write fails, the job is
    CANCELLED and its run still RUNNING. The supervisor already running finds it on its next sweep,
    not only when the control plane restarts."""
    engine, sessions = database
    home = tmp_path / "home"
    # Long enough that the "not yet" tick below comes within it on a loaded machine (0.2 s did not).
    settings = replace(jobs_settings(home), run_sweep_s=2.0)
    supervisor = Supervisor(sessions, settings, LocalExecutor(cwd=REPO_ROOT), lambda: "127.0.0.1:1")
    supervisor.tick()  # up and past its start-up sweep
    service = JobService(sessions, settings, FeatureRegistry(sessions, ()), OfflineStore(str(tmp_path / "o")))
    job = service.submit(spec_from_mapping(job_spec("waits", gpus=1)), actor="tester")
    with read_session(sessions) as session:
        row = session.get(JobRow, job.job_id)
        assert row is not None
    run_id = supervisor._create_run(row)  # what a start that crashed before recording its run leaves
    tracking = TrackingStore(sessions)
    with engine.begin() as connection:  # the run's end fails once (a write the database refuses)
        connection.exec_driver_sql(
            f"CREATE TRIGGER test_refuse BEFORE UPDATE ON tracking_runs WHEN OLD.run_id = '{run_id}' "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
    cancelled = service.cancel(job.job_id, "not needed", actor="tester")
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TRIGGER test_refuse")
    assert cancelled.state == pb.JOB_STATE_CANCELLED and cancelled.run_id == run_id
    assert tracking.get_run(run_id).status == tpb.RUN_STATUS_RUNNING, (
        "the cancel's end of the run did not fail"
    )

    supervisor.tick()  # within the sweep interval: not yet
    assert tracking.get_run(run_id).status == tpb.RUN_STATUS_RUNNING

    def swept() -> bool:
        supervisor.tick()
        return tracking.get_run(run_id).status == tpb.RUN_STATUS_KILLED

    wait_for(swept, timeout=15)
    run = tracking.get_run(run_id)
    assert run.end_time_us == cancelled.finished_at_us and run_updates(sessions, run_id) == 1
