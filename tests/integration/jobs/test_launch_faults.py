"""Faults of the host while the supervisor starts an attempt: a full disk (a real one, a small tmpfs as
the jobs folder) is the host's and passes, so it spends a retry and the job is retried while retries
remain; an entrypoint that is not there is the job's and is never retried (``test_faults.py``)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.aether.v1 import jobs_pb2 as pb
from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head
from control_plane.jobs.executor import LocalExecutor
from control_plane.jobs.service import JobService
from control_plane.jobs.spec import spec_from_mapping
from control_plane.jobs.supervisor import Supervisor
from tests.integration.jobs.conftest import (
    REPO_ROOT,
    job_spec,
    jobs_settings,
    process_alive,
    states_of,
    wait_for,
)


@contextlib.contextmanager
def small_filesystem(folder: Path) -> Iterator[Path]:
    """``folder`` as a tmpfs of 1 MiB of its own, which a test can fill (mounting needs root)."""
    if os.geteuid() != 0:
        pytest.skip(f"mounting a tmpfs to fill needs root; the tests run as uid {os.geteuid()}")
    folder.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(folder: Path) -> Path:
    """Writes a file into ``folder`` until its filesystem is full (ENOSPC); the file."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as sink:
        try:
            while True:
                sink.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def test_a_full_disk_while_launching_spends_a_retry_and_the_job_runs_once_there_is_room(
    tmp_path: Path,
) -> None:
    """The jobs folder's disk is full when attempt 2 starts: its spec cannot be written. That ended the
    job FAILED at once, retries left or not, as if its entrypoint were missing; the disk's fault passes,
    so it is a failed attempt like any other, and attempt 3 runs once there is room."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'aether.db'}")  # not on the small disk
    upgrade_to_head(engine)
    sessions = create_session_factory(engine)
    settings = jobs_settings(tmp_path / "home")
    with small_filesystem(settings.folder) as jobs_folder:
        service = JobService(sessions, settings, None, None)  # type: ignore[arg-type]  # no feature refs
        supervisor = Supervisor(sessions, settings, LocalExecutor(cwd=REPO_ROOT), lambda: "127.0.0.1:1")
        spec = job_spec("full-disk", "--fail-attempts", "1", max_retries=2)
        job = service.submit(spec_from_mapping(spec), actor="tester")

        def state_after_tick() -> int:
            supervisor.tick()
            return service.get(job.job_id).state

        folder = jobs_folder / job.job_id
        try:
            supervisor.tick()  # attempt 1 starts, and fails by itself
            # Its launcher gone, the next tick ends it and starts attempt 2: on a full disk.
            wait_for(lambda: (folder / "attempt-1.exit.json").exists())
            launcher = json.loads((folder / "attempt-1.pid.json").read_text())["pid"]
            wait_for(lambda: not process_alive(launcher))
            filler = fill(jobs_folder)
            supervisor.tick()
            full = service.get(job.job_id)
            assert (full.state, full.attempt) == (pb.JOB_STATE_RETRYING, 2), full.reason
            assert full.reason.startswith("attempt 2 failed: cannot launch: ") and full.reason.endswith(
                "; retry 2 of 2"
            )
            assert "No space left on device" in full.reason
            filler.unlink()
            wait_for(lambda: state_after_tick() in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED))
            done = service.get(job.job_id)
            log = (folder / "job.log").read_text()
        finally:
            engine.dispose()
    assert states_of(done) == [
        "QUEUED", "RUNNING", "RETRYING", "RUNNING", "RETRYING", "RUNNING", "SUCCEEDED",
    ], done.reason  # fmt: skip
    assert done.attempt == 3
    assert "attempt 3 of 3 started" in log
