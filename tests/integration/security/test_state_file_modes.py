"""The state the servers write is the owner's alone: a home folder the control plane creates is 0700, the
SQLite database (and its -wal/-shm files) and a job's log 0600, whatever the umask lets other users read.

The database holds every job's ``spec.env`` (its secrets), webhook URLs and quarantined records, and a
job's log whatever the job printed; they were created with the umask's 0755/0644, so any local user could
read them. Checked with ``stat`` on the files a real ``python -m control_plane`` and a real job wrote."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.aether.v1 import jobs_pb2 as pb
from clients.sdk.jobs import JobsClient
from control_plane.db import create_db_engine
from data_plane.watch_stream import save_snapshot

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _control_plane(home: Path) -> Iterator[str]:
    """A real control plane with the default database (in ``home``), started under the common umask 022
    (the test's own may be stricter), yielding its address."""
    env = {**os.environ, "AETHER_HOME": str(home)}
    for name in ("AETHER_DB_URL", "AETHER_ADMIN_TOKEN", "AETHER_ADMIN_TOKEN_FILE", "AETHER_JOBS_DIR"):
        env.pop(name, None)
    previous = os.umask(0o022)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "control_plane", "--listen", "127.0.0.1:0"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
    finally:
        os.umask(previous)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("aether control plane listening on "), line
        yield line.rsplit(" ", 1)[1]
    finally:
        process.terminate()
        process.wait(timeout=30)


def _run_a_job(address: str) -> pb.Job:
    with JobsClient(address, timeout=20) as jobs:
        spec = {"name": "talker", "entrypoint": {"command": [sys.executable, "-c", "print('secret-ish')"]}}
        job = jobs.wait(jobs.submit(spec).job_id, timeout=60)
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.reason
    return job


def test_the_control_plane_and_its_jobs_write_owner_only_state(tmp_path: Path) -> None:
    home = tmp_path / "missing" / "home"
    for address in _control_plane(home):
        job = _run_a_job(address)
        database = home / "aether.db"
        # WAL mode: the -wal and -shm files exist while the database is open.
        files = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
        assert {str(path): oct(_mode(path)) for path in files} == {str(path): "0o600" for path in files}
        log = Path(job.log_path)
        assert log.read_text().count("secret-ish") == 1
        folders = {"home": home, "jobs": home / "jobs", "job": log.parent}
        assert {name: oct(_mode(path)) for name, path in folders.items()} == dict.fromkeys(folders, "0o700")
        assert (oct(_mode(log)), oct(_mode(Path(job.checkpoint_dir)))) == ("0o600", "0o700")


def test_a_home_the_user_made_keeps_its_mode_but_the_files_in_it_are_private(tmp_path: Path) -> None:
    # The operator chose this mode (a data plane running as another user may read the artifact store
    # under it): it is not changed behind their back. What holds secrets is private all the same.
    home = tmp_path / "shared"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    for address in _control_plane(home):
        job = _run_a_job(address)
        assert _mode(home) == 0o755
        assert (_mode(home / "aether.db"), _mode(Path(job.log_path))) == (0o600, 0o600)


def test_the_data_planes_snapshot_folder_and_a_databases_folders_are_owner_only(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        save_snapshot(tmp_path / "home" / "registry_snapshot.pb", b"snapshot")
        engine = create_db_engine(f"sqlite:///{tmp_path / 'a' / 'b' / 'c' / 'meta.db'}")
        engine.dispose()
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "home") == 0o700
    # Every folder it had to create, not only the last: the data plane's engine cache, say, creates
    # AETHER_HOME as its parent, and the rest of the state goes there later.
    assert [_mode(tmp_path / name) for name in ("a", "a/b", "a/b/c", "a/b/c/meta.db")] == [0o700] * 3 + [
        0o600
    ]


def test_state_made_before_modes_were_private_is_made_private_at_start(tmp_path: Path) -> None:
    """Homes, databases and job folders made by an older control plane have the umask's 0755/0644, and a
    file or folder that exists keeps its mode: a restart left them readable by every local user. At start
    the control plane now takes group and other permissions off what it made and what holds secrets: the
    SQLite database (with -wal/-shm) and every job's folder, spec and log. A home folder it cannot tell
    from the user's own keeps its mode (see the test above), and so does the jobs folder above them."""
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    for address in _control_plane(home):
        job = _run_a_job(address)
    job_folder = Path(job.log_path).parent
    database = home / "aether.db"
    old_files = [database, job_folder / "spec.json", Path(job.log_path)]
    for path in old_files:
        path.chmod(0o644)
    job_folder.chmod(0o755)
    (home / "jobs").chmod(0o755)
    for _ in _control_plane(home):
        assert {str(path): oct(_mode(path)) for path in old_files} == {
            str(path): "0o600" for path in old_files
        }
        assert oct(_mode(job_folder)) == "0o700"
        assert (_mode(home), _mode(home / "jobs")) == (0o755, 0o755)
        # SQLite gives the -wal and -shm files it creates the database's mode, so they follow it.
        assert [_mode(Path(f"{database}{end}")) for end in ("-wal", "-shm")] == [0o600, 0o600]
