"""``python -m data_plane``: prints where it listens once ready, serves, and drains on SIGTERM."""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from data_plane.__main__ import parse_args
from data_plane.registry_watch import save_snapshot
from data_plane.workers import SERVING_LINE
from tests.support.ports import refused_address
from tests.support.redis_server import RedisServer, cluster_node
from tests.unit.data_plane.registry_builders import floats, snapshot, view

pytestmark = pytest.mark.integration


def test_module_entrypoint_announces_its_port_and_exits_cleanly_on_sigterm(
    redis_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "registry_snapshot.pb"
    save_snapshot(path, snapshot(view("stats", floats(2))).SerializeToString())
    process = subprocess.Popen(
        [
            sys.executable, "-m", "data_plane",
            "--listen", "127.0.0.1:0",
            "--redis-url", redis_url,
            "--control-plane", refused_address(),
            "--snapshot-path", str(path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "AETHER_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.fullmatch(r"aether data plane listening on 127\.0\.0\.1:(\d+)\n", line)
        assert match, line
        # Listening comes first; health turns SERVING (and says so in a line of its own) once the registry's
        # catalog is in: checked before that line, health may still say NOT_SERVING (seen in CI).
        assert process.stdout.readline() == f"{SERVING_LINE}\n"
        with grpc.insecure_channel(f"127.0.0.1:{match[1]}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_redis_cluster_node_or_a_refused_password_stops_the_start_with_one_line(tmp_path: Path) -> None:
    """Against a Redis Cluster node the data plane started, and every read of two entities failed
    CROSSSLOT as INTERNAL; a URL without the password started a server whose every read failed."""
    path = tmp_path / "registry_snapshot.pb"
    save_snapshot(path, snapshot(view("stats", floats(2))).SerializeToString())
    cluster = cluster_node()
    locked = RedisServer(args=["--requirepass", "s3cret"], password="s3cret")
    for server in (cluster, locked):
        server.start()
    try:
        for (server, expected), workers in itertools.product(
            (
                (cluster, f"the online store at {cluster.url} is a Redis Cluster node; "),
                (locked, f"the online store at {locked.url} refused the data plane: NOAUTH"),
            ),
            ("1", "2"),  # --workers 2: the parent says it, not "a data-plane worker failed to start"
        ):
            finished = subprocess.run(
                [
                    sys.executable, "-m", "data_plane", "--workers", workers,
                    "--listen", "127.0.0.1:0",
                    "--redis-url", server.url,
                    "--control-plane", refused_address(),
                    "--snapshot-path", str(path),
                ],
                capture_output=True,
                text=True,
                timeout=30,
                env={**os.environ, "AETHER_HOME": str(tmp_path / "home")},
            )  # fmt: skip
            assert finished.returncode == 1, finished.stderr
            last = finished.stderr.strip().splitlines()[-1]
            assert last.startswith(f"python -m data_plane: error: {expected}"), finished.stderr
            assert "worker" not in finished.stderr
            assert "listening" not in finished.stdout
    finally:
        cluster.close()
        locked.close()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://127.0.0.1:99999", "the port must be a number from 0 to 65535"),
        ("rediss://:S3cretPw@127.0.0.1:6379", "unsupported Redis URL 'rediss://127.0.0.1:6379'"),
        ("redis://:S3cretPw@127.0.0.1:6379/zero", "the path must be a database number"),
        ("redis://127.0.0.1:6379/0?password=S3cretPw&timeout=1", "unsupported query parameter 'timeout'"),
    ],
)
def test_a_redis_url_the_data_plane_cannot_use_is_one_line_without_its_password(
    tmp_path: Path, url: str, problem: str
) -> None:
    # A traceback of 30 lines, the last naming the URL with its password.
    finished = subprocess.run(
        [sys.executable, "-m", "data_plane", "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=30,
        env={**os.environ, "AETHER_HOME": str(tmp_path / "home"), "AETHER_REDIS_URL": url},
    )  # fmt: skip
    assert finished.returncode == 2
    assert finished.stderr.startswith("python -m data_plane: error: AETHER_REDIS_URL / --redis-url: ")
    assert problem in finished.stderr and len(finished.stderr.splitlines()) == 1
    assert "S3cretPw" not in finished.stderr


def test_an_abbreviated_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """``--work 2`` was taken for ``--workers 2``, but the parent strips only the full spelling from its
    workers' flags: each worker then started workers of its own and failed "address already in use"."""
    with pytest.raises(SystemExit) as usage:
        parse_args(["--work", "2"], environ={})
    assert usage.value.code == 2
    assert "unrecognized arguments: --work 2" in capsys.readouterr().err


def test_a_metrics_port_in_use_stops_the_start_with_one_line(tmp_path: Path) -> None:
    """It was an OSError traceback once the server was up, after the models had loaded; a --listen port in
    use is one line and status 1 before anything starts, and so must this be."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = f"127.0.0.1:{holder.getsockname()[1]}"
        finished = subprocess.run(
            [
                sys.executable, "-m", "data_plane", "--listen", "127.0.0.1:0", "--metrics-listen", busy,
                "--control-plane", refused_address(),
            ],
            capture_output=True, text=True, timeout=30,
            env={**os.environ, "AETHER_HOME": str(tmp_path / "home")},
        )  # fmt: skip
    assert (finished.returncode, finished.stdout) == (1, ""), finished.stderr
    assert finished.stderr == (
        f"python -m data_plane: error: cannot listen on {busy}: the address is already in use\n"
    )
