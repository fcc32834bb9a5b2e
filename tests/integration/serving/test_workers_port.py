"""``python -m data_plane --workers N`` and a port someone else holds, with real sockets held by the test.

A ``--workers`` data plane binds with SO_REUSEPORT, which the kernel lets any other socket of the same
user with SO_REUSEPORT share (gRPC servers set it by default): such a server on the port must stop the
start, as a plain one does, instead of silently taking part of the clients. A port that only a previous
server's closed connections hold (TIME_WAIT) must not stop it, as it does not stop a single process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.support.data_plane_process import start_data_plane

pytestmark = pytest.mark.integration

_TIME_WAIT = "06"  # the state column of /proc/net/tcp


def _data_plane(
    redis_url: str, tmp_path: Path, *flags: str, snapshot: Path | None = None
) -> subprocess.Popen[str]:
    snapshot = snapshot or tmp_path / f"{time.monotonic_ns()}.pb"
    return start_data_plane(redis_url, tmp_path / "home", snapshot, *flags, "--drain-delay-s", "0")


@contextlib.contextmanager
def _stopped_at_the_end(process: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _refused_with_one_line(process: subprocess.Popen[str], expected: str) -> None:
    out, err = process.communicate(timeout=30)
    assert process.returncode == 1, (out, err)
    assert err.splitlines()[-1] == f"python -m data_plane: error: {expected}", err
    assert "Traceback" not in err and "aether data plane listening" not in out, (out, err)


def _plain_listener() -> tuple[socket.socket, int]:
    listener = socket.create_server(("127.0.0.1", 0))  # SO_REUSEADDR, no SO_REUSEPORT
    return listener, listener.getsockname()[1]


@contextlib.contextmanager
def _grpc_server() -> Iterator[int]:
    """A real grpc.aio server on a loopback port, with gRPC's default options (SO_REUSEPORT set)."""
    loop = asyncio.new_event_loop()

    async def started() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = loop.run_until_complete(started())
    try:
        yield port
    finally:
        loop.run_until_complete(server.stop(None))
        loop.close()


@pytest.mark.parametrize("flags", [(), ("--workers", "2")], ids=["one process", "two workers"])
@pytest.mark.parametrize("holder", ["plain listener", "grpc server (SO_REUSEPORT)"])
def test_a_port_another_server_listens_on_is_refused(
    redis_url: str, tmp_path: Path, flags: tuple[str, ...], holder: str
) -> None:
    with contextlib.ExitStack() as held:
        if holder == "plain listener":
            port = held.enter_context(_plain_listener()[0]).getsockname()[1]
        else:
            port = held.enter_context(_grpc_server())
        listen = f"127.0.0.1:{port}"
        with _stopped_at_the_end(_data_plane(redis_url, tmp_path, *flags, "--listen", listen)) as process:
            _refused_with_one_line(process, f"cannot listen on {listen}: the address is already in use")


def _time_wait_on(port: int) -> bool:
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == _TIME_WAIT and int(fields[1].rsplit(":", 1)[1], 16) == port:
            return True
    return False


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads socket states from /proc")
@pytest.mark.parametrize("flags", [(), ("--workers", "2")], ids=["one process", "two workers"])
def test_a_port_left_in_time_wait_by_a_previous_server_does_not_stop_the_start(
    redis_url: str, tmp_path: Path, flags: tuple[str, ...]
) -> None:
    """A previous single-process data plane (gRPC: SO_REUSEADDR, no SO_REUSEPORT) that closed its clients'
    connections first leaves them in TIME_WAIT on its port for a minute. A single process started again
    on it then started; one with --workers failed with an OSError traceback: its reservation of the port
    (SO_REUSEPORT without SO_REUSEADDR) conflicts with those connections."""
    listener, port = _plain_listener()
    with listener, socket.create_connection(("127.0.0.1", port)) as client:
        accepted, _ = listener.accept()
        accepted.close()  # the server closes first: its side of the connection goes to TIME_WAIT
        assert client.recv(1) == b""
    deadline = time.monotonic() + 10
    while not _time_wait_on(port):
        assert time.monotonic() < deadline, "the server's side never reached TIME_WAIT"
        time.sleep(0.01)
    listen = f"127.0.0.1:{port}"
    with _stopped_at_the_end(_data_plane(redis_url, tmp_path, *flags, "--listen", listen)) as process:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line == f"aether data plane listening on {listen}\n", process.communicate(timeout=10)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


@pytest.mark.timeout(90)
def test_a_server_that_starts_listening_on_the_port_while_the_workers_start_is_refused(
    redis_url: str, tmp_path: Path
) -> None:
    """The check before the start cannot see a server that starts listening afterwards, while the workers
    load; with SO_REUSEPORT (as gRPC's), the workers then joined it and the data plane served half of its
    clients. The moment is staged with the workers' registry snapshot file, a named pipe here: a worker
    reads it before it binds, and the data plane starts its workers only once its port was checked."""
    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    other.bind(("127.0.0.1", 0))  # bound only: the check before the start finds the port free
    listen = f"127.0.0.1:{other.getsockname()[1]}"
    snapshot = tmp_path / "snapshot.pb"
    os.mkfifo(snapshot)
    with (
        other,
        _stopped_at_the_end(
            _data_plane(redis_url, tmp_path, "--workers", "2", "--listen", listen, snapshot=snapshot)
        ) as process,
    ):
        with open(snapshot, "wb"):  # returns once a worker opens it: the port was checked, none bound yet
            other.listen()
        # Every other reader of the pipe gets an end of file (no snapshot) too, until the data plane ends.
        done = threading.Event()
        threading.Thread(target=_end_of_file_until, args=(snapshot, done), daemon=True).start()
        try:
            _refused_with_one_line(
                process,
                f"cannot listen on {listen}: another process listens there too, with SO_REUSEPORT, and "
                f"would take part of the connections: {listen} (pid {os.getpid()})",
            )
        finally:
            done.set()


def _end_of_file_until(fifo: Path, done: threading.Event) -> None:
    while not done.wait(0.02):
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # no reader now
            continue
