"""A submit whose database write fails leaves no job folder, and so none of its spec's secrets, behind;
a committed job's folder is never lost (``control_plane/jobs/staging.py``).

The database failure is real: another connection holds SQLite's write lock past the submit's busy
timeout. The commit whose outcome is unknown (a connection lost during COMMIT) cannot be caused at will,
so what it leaves, a folder under its staging name with or without a row, is made by hand (``FAULT``)
and handed to the sweep and to the supervisor as a restarted control plane finds it."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from clients.aether.v1 import jobs_pb2 as pb
from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head
from control_plane.features.registry import FeatureRegistry
from control_plane.jobs.executor import LocalExecutor
from control_plane.jobs.service import JobService
from control_plane.jobs.spec import spec_from_mapping
from control_plane.jobs.supervisor import Supervisor
from control_plane.offline.store import OfflineStore
from tests.integration.jobs.conftest import REPO_ROOT, job_spec, jobs_settings, wait_for

SECRET = "s3cr3t-token-0451"


def _files_holding(folder: Path, text: str) -> list[Path]:
    """The files under ``folder`` whose bytes hold ``text``."""
    found = []
    for parent, _, names in os.walk(folder):
        for name in names:
            path = Path(parent, name)
            if text.encode() in path.read_bytes():
                found.append(path)
    return found


def test_a_submit_whose_database_write_fails_leaves_no_folder_and_no_secret(tmp_path: Path) -> None:
    """The submit wrote the job's folder (its spec with ``env`` and its secrets) and then its row: with
    the row refused, the folder stayed with no row, which nothing ever removed. Now nothing is left, a
    submit once the database takes writes again works, and its folder is where its row says, found by
    a control plane started afterwards."""
    database = tmp_path / "aether.db"
    upgrade_to_head(create_db_engine(f"sqlite:///{database}"))
    engine = create_db_engine(f"sqlite:///{database}", busy_timeout_s=0.2)
    sessions = create_session_factory(engine)
    settings = jobs_settings(tmp_path / "home")
    service = JobService(sessions, settings, FeatureRegistry(sessions, ()), OfflineStore(str(tmp_path / "o")))
    spec = spec_from_mapping(job_spec("secretive", env={"API_TOKEN": SECRET}))

    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the write lock past the busy timeout
    try:
        with pytest.raises(OperationalError, match="database is locked"):
            service.submit(spec, actor="tester")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert list(settings.folder.iterdir()) == []
    assert _files_holding(tmp_path / "home", SECRET) == []

    job = service.submit(spec, actor="tester")
    folder = settings.folder / job.job_id
    assert [path.name for path in settings.folder.iterdir()] == [job.job_id]
    assert _files_holding(folder, SECRET) == [folder / "spec.json"]

    restarted = create_session_factory(create_db_engine(f"sqlite:///{database}"))
    again = JobService(restarted, settings, FeatureRegistry(restarted, ()), OfflineStore(str(tmp_path / "o")))
    log, ended = again.log_file(job.job_id)
    assert (log, ended) == (folder / "job.log", False)
    assert log.exists()
    engine.dispose()


def test_the_sweep_puts_committed_folders_in_place_and_removes_only_abandoned_staging_folders(
    tmp_path: Path, db_url: str
) -> None:
    """What a commit of unknown outcome (or a crash between commit and rename) leaves: a staging folder
    whose job committed is put in place; one whose job has no row is removed once older than the grace,
    not before (a COMMIT sent may still land), and never while a submit holds it; a folder named like a
    job id without a row is not the sweep's (the jobs folder may be shared, or the user's)."""
    from control_plane.jobs import staging  # after the fix only: the test above shows the fault without it

    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    sessions = create_session_factory(engine)
    settings = jobs_settings(tmp_path / "home")
    service = JobService(sessions, settings, FeatureRegistry(sessions, ()), OfflineStore(str(tmp_path / "o")))
    committed = service.submit(spec_from_mapping(job_spec("committed")), actor="tester")
    final = settings.folder / committed.job_id
    os.rename(final, staging.staging_path(final))  # FAULT: the submit died between commit and rename

    def abandoned(job_id: str, age_s: float) -> Path:
        """FAULT: the folder of a submit whose commit failed and did not commit."""
        path = settings.folder / f"{staging.STAGING_PREFIX}{job_id}"
        path.mkdir()
        (path / "spec.json").write_text(SECRET)
        when = time.time() - age_s
        os.utime(path, (when, when))
        return path

    old = abandoned("0000000000aa", staging.STAGING_GRACE_S + 1)
    young = abandoned("0000000000bb", 1)
    busy = staging.StagedFolder.create(settings.folder / "0000000000cc")  # a submit still writing
    os.utime(busy.path, (0, 0))
    stranger = settings.folder / "0000000000dd"
    stranger.mkdir()

    swept = staging.sweep(settings.folder, sessions)
    assert (swept.placed, swept.removed) == ([committed.job_id], ["0000000000aa"])
    assert (final / "spec.json").exists() and not old.exists()
    assert young.exists() and busy.path.exists() and stranger.exists()
    busy.release()
    assert staging.sweep(settings.folder, sessions, now=time.time() + staging.STAGING_GRACE_S).removed == [
        "0000000000bb", "0000000000cc",
    ]  # fmt: skip
    assert sorted(path.name for path in settings.folder.iterdir()) == sorted(
        [committed.job_id, stranger.name]
    )
    engine.dispose()


def test_a_job_read_before_its_folder_is_in_place_runs(tmp_path: Path) -> None:
    """A supervisor (of this control plane or another on the database) may read a job between its
    submit's commit and the rename of its folder: it puts the folder in place and runs the job."""
    from control_plane.jobs import staging

    engine = create_db_engine(f"sqlite:///{tmp_path / 'aether.db'}")
    upgrade_to_head(engine)
    sessions = create_session_factory(engine)
    settings = jobs_settings(tmp_path / "home")
    service = JobService(sessions, settings, FeatureRegistry(sessions, ()), OfflineStore(str(tmp_path / "o")))
    supervisor = Supervisor(sessions, settings, LocalExecutor(cwd=REPO_ROOT), lambda: "127.0.0.1:1")
    supervisor.tick()  # its first staging sweep done: the folder below is found by the start
    job = service.submit(spec_from_mapping(job_spec("late-folder")), actor="tester")
    final = settings.folder / job.job_id
    os.rename(final, staging.staging_path(final))  # FAULT: the rename has not happened yet

    def ended() -> bool:
        supervisor.tick()
        return service.get(job.job_id).state == pb.JOB_STATE_SUCCEEDED

    try:
        wait_for(ended, timeout=30)
    finally:
        supervisor.stop()
    assert (final / "job.log").exists()
    assert not staging.staging_path(final).exists()
    engine.dispose()
