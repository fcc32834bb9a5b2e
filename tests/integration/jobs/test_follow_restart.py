"""Following a job outlives a restart of its control plane: ``aetherctl jobs logs -f`` and
``JobsClient.watch``/``wait`` reconnect to the next control plane (which re-adopts the job) and go on
from the last byte / state they had, until the job ends. They gave up at the first UNAVAILABLE: ``logs -f``
printed ``error: UNAVAILABLE`` and exited 1, and ``wait`` raised, for a job that went on to SUCCEED. Real
control-plane processes killed (SIGKILL) or stopped (SIGTERM) mid-follow, and a real ``aetherctl``
process following.

The clients follow one address the test owns for its whole run (``front``, a real TCP proxy), which the
next control plane serves from a port of its own: the restart used to bind the first one's port again,
which another test worker's server or connection took in between now and then ("address already in
use"). Each test takes that port itself once its control plane is down, as that worker did."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from clients.aether.v1 import jobs_pb2 as pb
from clients.keepalive import watch_channel_options
from clients.sdk.jobs import RECONNECT_FOR_S, RECONNECT_MOST_PAUSE_S, JobsClient, state_name
from tests.integration.jobs.conftest import REPO_ROOT, ControlPlaneProcess, wait_for, wait_state
from tests.support.tcp_proxy import AnswerLosingProxy

#: Lines per phase of the job's log: 100 KB, more than one 64 KiB chunk of ``Logs``.
LINES = 1500


def _phased_job(client: JobsClient, *gates: Path) -> pb.Job:
    args = ["--lines", str(LINES), *(arg for gate in gates for arg in ("--gate", str(gate)))]
    module = "tests.integration.jobs.programs.phased_log"
    job = client.submit({"name": "phased", "entrypoint": {"module": module, "args": args}})
    return wait_state(client, job.job_id, pb.JOB_STATE_RUNNING)


class _Follower:
    """``aetherctl jobs logs -f JOB`` in a process of its own, its output gathered as it comes."""

    def __init__(self, address: str, job_id: str, *flags: str) -> None:
        command = [
            sys.executable, "-m", "control_plane.cli.main", "--control-plane", address, "jobs", "logs",
            job_id, "-f", *flags,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._out = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        while data := os.read(self.process.stdout.fileno(), 65536):
            with self._lock:
                self._out += data

    def output(self) -> bytes:
        with self._lock:
            return bytes(self._out)

    def finish(self, timeout: float = 120) -> tuple[int, bytes, str]:
        assert self.process.stderr is not None
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code, self.output(), self.process.stderr.read().decode()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def _watcher(
    connect: Callable[[], JobsClient], job_id: str, reconnect_for: float = RECONNECT_FOR_S
) -> tuple[Callable[[], list[pb.Job]], threading.Event]:
    """A ``watch`` of ``job_id`` to run in a thread (it returns every update) and the event it sets at the
    first update, once its stream is open."""
    watching = threading.Event()

    def watch() -> list[pb.Job]:
        seen: list[pb.Job] = []
        with connect() as watcher:
            for update in watcher.watch(job_id, reconnect_for=reconnect_for):
                seen.append(update)
                watching.set()
        return seen

    return watch, watching


@pytest.fixture
def front() -> Iterator[AnswerLosingProxy]:
    """The control planes' address for the clients, bound for the whole test; ``_serve`` puts a plane
    behind it and ``_end`` takes it away."""
    proxy = AnswerLosingProxy(None)
    yield proxy
    proxy.close()


def _serve(front: AnswerLosingProxy, plane: ControlPlaneProcess) -> ControlPlaneProcess:
    front.forward_to(plane.address)
    return plane


def _end(front: AnswerLosingProxy, plane: ControlPlaneProcess, how: str) -> socket.socket:
    """Ends ``plane`` and returns its port, bound and listening here: the port is someone else's now (as
    in CI, where another worker took it), so a restart that needed it fails."""
    front.forward_to(None)  # first, so no new connection reaches the port once it is free
    if how == "SIGKILL":
        plane.crash()
    else:
        plane.stop()
    thief = socket.socket()
    thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the old plane's TIME_WAIT
    host, port = plane.address.rsplit(":", 1)
    try:
        thief.bind((host, int(port)))
        thief.listen(1)
    except OSError as taken:
        if taken.errno != errno.EADDRINUSE:
            raise
        # Another process took it first: what the thief stands in for. The unbound socket is closed alike.
    return thief


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_logs_follow_prints_the_whole_log_once_across_a_control_plane_restart(
    tmp_path: Path, planes: list[ControlPlaneProcess], front: AnswerLosingProxy, how: str
) -> None:
    db_url, home = f"sqlite:///{tmp_path / 'aether.db'}", tmp_path / "home"
    during, after = tmp_path / "during", tmp_path / "after"  # gates of the job's next phases
    planes.append(first := _serve(front, ControlPlaneProcess(db_url, home)))
    with JobsClient(front.address) as client:
        job = _phased_job(client, during, after)
    log = Path(job.log_path)
    follower = _Follower(front.address, job.job_id)
    try:
        wait_for(lambda: b"phase 0 done" in follower.output(), timeout=60)
        with _end(front, first, how):
            # The job writes on while no control plane serves its log.
            during.touch()
            wait_for(lambda: b"phase 1 done" in log.read_bytes(), timeout=60)
            planes.append(_serve(front, ControlPlaneProcess(db_url, home)))
            after.touch()
            code, out, err = follower.finish()
    finally:
        follower.stop()
    with JobsClient(front.address) as client:
        done = wait_state(client, job.job_id, pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, timeout=60)
        whole = b"".join(client.logs(job.job_id))
    assert state_name(done.state) == "SUCCEEDED", done.reason
    assert (code, err) == (0, ""), err
    assert b"phase 2 done" in whole
    # Every byte of the log exactly once, in order: nothing repeated or skipped at the reconnect.
    assert out == whole


def test_watch_and_wait_go_on_across_a_control_plane_restart(
    tmp_path: Path, planes: list[ControlPlaneProcess], front: AnswerLosingProxy
) -> None:
    db_url, home, release = f"sqlite:///{tmp_path / 'aether.db'}", tmp_path / "home", tmp_path / "release"
    planes.append(first := _serve(front, ControlPlaneProcess(db_url, home)))
    with JobsClient(front.address) as client:
        job = _phased_job(client, release)
    watch, watching = _watcher(lambda: JobsClient(front.address), job.job_id)
    with ThreadPoolExecutor(2) as pool, JobsClient(front.address) as waiter:
        watched = pool.submit(watch)
        waited = pool.submit(waiter.wait, job.job_id)
        assert watching.wait(timeout=60)  # the watch stream is open: the restart comes in its middle
        with _end(front, first, "SIGKILL"):
            planes.append(_serve(front, ControlPlaneProcess(db_url, home)))
            release.touch()
            updates = watched.result(timeout=120)
            done = waited.result(timeout=120)
    assert state_name(done.state) == "SUCCEEDED", done.reason
    assert state_name(updates[-1].state) == "SUCCEEDED"
    # The reconnected watch yields what changed since its last job, not that job again.
    keys = [(update.updated_at_us, len(update.history)) for update in updates]
    assert len(keys) == len(set(keys))
    with JobsClient(front.address) as client:
        assert client.get(job.job_id).state == pb.JOB_STATE_SUCCEEDED


def test_logs_follow_gives_up_after_reconnect_for_seconds_without_a_control_plane(
    tmp_path: Path, planes: list[ControlPlaneProcess], front: AnswerLosingProxy
) -> None:
    db_url, home, release = f"sqlite:///{tmp_path / 'aether.db'}", tmp_path / "home", tmp_path / "release"
    planes.append(first := _serve(front, ControlPlaneProcess(db_url, home)))
    with JobsClient(front.address) as client:
        job = _phased_job(client, release)
    follower = _Follower(front.address, job.job_id, "--reconnect-for", "1.5")
    try:
        wait_for(lambda: b"phase 0 done" in follower.output(), timeout=60)
        thief = _end(front, first, "SIGKILL")
        crashed = time.monotonic()
        code, _, err = follower.finish()
        gave_up_after = time.monotonic() - crashed
    finally:
        follower.stop()
    with thief:
        assert code == 1
        assert err.startswith(
            f"error: UNAVAILABLE: following job {job.job_id}: the control plane could not be"
        ), err
        assert "(the limit is 1.5 s)" in err
        assert gave_up_after >= 1.5
        # The job was never lost: the next control plane re-adopts it and it ends.
        planes.append(_serve(front, ControlPlaneProcess(db_url, home)))
        release.touch()
        with JobsClient(front.address) as client:
            done = wait_state(client, job.job_id, pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, timeout=60)
    assert state_name(done.state) == "SUCCEEDED", done.reason


class _QuickPings(JobsClient):
    """The jobs client with its keepalive shortened to a ping a second, given up after one more: a dead
    path shows in seconds, not in the defaults' 30."""

    CHANNEL_OPTIONS = (
        ("grpc.max_reconnect_backoff_ms", int(RECONNECT_MOST_PAUSE_S * 1000)),
        *watch_channel_options(1.0, 1.0),
    )


def test_watch_goes_on_when_its_connection_dies_without_a_reset(
    tmp_path: Path, planes: list[ControlPlaneProcess]
) -> None:
    """A followed job's stream is silent while the job runs; if its TCP path dies without a reset (a NAT
    or load balancer dropping the idle flow), only the keepalive's unanswered pings tell. Without them
    the watch waited on the dead stream for ever: a real proxy drops every answer of the open connection
    (nothing reset), while new connections go through."""
    db_url, home, release = f"sqlite:///{tmp_path / 'aether.db'}", tmp_path / "home", tmp_path / "release"
    planes.append(plane := ControlPlaneProcess(db_url, home))
    with JobsClient(plane.address) as client:
        job = _phased_job(client, release)
    proxy = AnswerLosingProxy(plane.address)
    watch, watching = _watcher(lambda: _QuickPings(proxy.address), job.job_id, reconnect_for=5.0)
    pool = ThreadPoolExecutor(1)
    try:
        watched = pool.submit(watch)
        assert watching.wait(timeout=60)
        proxy.kill_open_paths()
        wait_for(lambda: proxy.connections >= 2, timeout=30)  # the watch gave the dead path up
        release.touch()
        updates = watched.result(timeout=60)
    finally:
        release.touch()  # the job ends whatever happened, so the planes fixture stops cleanly
        # Closing the proxy resets a watch still waiting on the dead path, which then gives up within its
        # reconnect_for, so a regression fails here by its assertion, not by the test's timeout.
        proxy.close()
        pool.shutdown(wait=True)
    assert state_name(updates[-1].state) == "SUCCEEDED", updates[-1].reason
    # The client itself pings so, on its defaults (WATCH_KEEPALIVE_S): only the period is shortened here.
    assert set(watch_channel_options()) <= set(JobsClient.CHANNEL_OPTIONS)
