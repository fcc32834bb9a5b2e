"""A real control plane serving ``aether.v1.Jobs`` (with its supervisor loop and the local executor) on
a free loopback port, on its own event loop in a background thread so the synchronous SDK and CLI can
be called in-process. Jobs are real subprocesses running ``programs/job.py``."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clients.aether.v1 import jobs_pb2 as pb
from clients.errors import FailedPrecondition
from clients.sdk.jobs import JobsClient
from control_plane.api import jobs as jobs_api
from control_plane.jobs.pool import DevicePool
from control_plane.jobs.settings import JobsSettings
from control_plane.server import ControlPlaneServer, start_server
from control_plane.settings import ControlPlaneSettings

REPO_ROOT = Path(__file__).resolve().parents[3]
JOB_MODULE = "tests.integration.jobs.programs.job"


class ThreadedControlPlane:
    def __init__(self, settings: ControlPlaneSettings, jobs: JobsSettings) -> None:
        self.jobs_settings = jobs
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="control-plane", daemon=True)
        self._thread.start()
        self.server: ControlPlaneServer = asyncio.run_coroutine_threadsafe(
            start_server(settings, services=[jobs_api.service_module(jobs)]), self._loop
        ).result(timeout=60)
        self.address = self.server.address

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


#: The supervisors' lease of the tests' control planes (``control_plane/jobs/lease.py``).
TEST_LEASE_S = 1.0


def jobs_settings(home: Path, gpus: str = "2") -> JobsSettings:
    return JobsSettings(
        folder=home / "jobs",
        pool=DevicePool.from_config(gpus),
        tick_s=0.1,
        kill_grace_s=1.0,
        job_cwd=REPO_ROOT,
        # A control plane a test kills (SIGKILL) holds the supervisors' lease until it expires: the next
        # one takes over within a second, as a test waits, not the default 15 s.
        lease_s=TEST_LEASE_S,
        lease_renew_s=TEST_LEASE_S / 4,
    )


@pytest.fixture
def reachable_home() -> Iterator[Path]:
    """A state folder a job user may enter (pytest's own temporary folders are 0700): 0711, listed by
    none (``test_job_user.py``, ``test_job_uid_range.py``)."""
    base = Path(tempfile.mkdtemp(prefix="aether-job-user-"))
    try:
        base.chmod(0o711)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'aether.db'}"


@pytest.fixture
def control_plane(tmp_path: Path, sqlite_url: str) -> Iterator[ThreadedControlPlane]:
    home = tmp_path / "home"
    settings = ControlPlaneSettings(
        home=home, db_url=sqlite_url, listen_addr="127.0.0.1:0", shutdown_grace_s=0.5
    )
    server = ThreadedControlPlane(settings, jobs_settings(home))
    yield server
    server.stop()


@pytest.fixture
def client(control_plane: ThreadedControlPlane) -> Iterator[JobsClient]:
    with JobsClient(control_plane.address, actor="tester") as jobs_client:
        yield jobs_client
        # Jobs outlive their control plane by design: stop the test's leftovers before it goes.
        live = (pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING, pb.JOB_STATE_RETRYING)
        for job in jobs_client.list(live):
            if not job.cancel_requested:
                with contextlib.suppress(FailedPrecondition):  # it ended meanwhile
                    jobs_client.cancel(job.job_id, "test teardown")
        wait_for(lambda: not jobs_client.list(live), timeout=15)


def job_spec(name: str, *args: str, **fields: Any) -> dict[str, Any]:
    """A spec running the test job program with ``args``."""
    return {"name": name, "entrypoint": {"module": JOB_MODULE, "args": list(args)}, **fields}


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def wait_state(client: JobsClient, job_id: str, *states: int, timeout: float = 20.0) -> pb.Job:
    return wait_for(lambda: (job := client.get(job_id)).state in states and job, timeout)  # type: ignore[no-any-return]


def states_of(job: pb.Job) -> list[str]:
    return [pb.JobState.Name(t.state).removeprefix("JOB_STATE_") for t in job.history]


def process_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


PYTHON = sys.executable


class ControlPlaneProcess:
    """A control plane serving ``aether.v1.Jobs`` in a process of its own (``programs/serve_jobs.py``),
    for tests that kill it (SIGKILL) and start the next one over the same database and job folders. Each
    listens on a free port of its own: a test whose clients must reconnect to the same address puts them
    behind a proxy it holds (``test_follow_restart.py``'s ``front``) rather than binding the previous
    one's port again, which another process may have taken meanwhile."""

    def __init__(self, db_url: str, home: Path) -> None:
        command = [
            sys.executable, "-m", "tests.integration.jobs.programs.serve_jobs", "--db-url", db_url,
            "--home", str(home), "--job-cwd", str(REPO_ROOT),
        ]  # fmt: skip
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("aether control plane listening on "), line
        self.address = line.rsplit(" ", 1)[1].strip()

    def crash(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


@pytest.fixture
def planes(tmp_path: Path) -> Iterator[list[ControlPlaneProcess]]:
    started: list[ControlPlaneProcess] = []
    yield started
    for plane in started:
        plane.stop()
