"""``python -m control_plane``: one ready line on stdout, serving health, a clean exit on SIGTERM."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


def test_module_entrypoint_serves_and_exits_on_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "AETHER_HOME": str(tmp_path / "home")}
    db_url = f"sqlite:///{tmp_path / 'meta.db'}"
    process = subprocess.Popen(
        [sys.executable, "-m", "control_plane", "--listen", "127.0.0.1:0", "--db-url", db_url],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        prefix = "aether control plane listening on 127.0.0.1:"
        assert line.startswith(prefix), (line, process.stderr.read() if process.stderr else "")
        port = int(line.removeprefix(prefix))
        assert port > 0

        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        assert (tmp_path / "meta.db").exists() and (tmp_path / "home").is_dir()

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stdout.read() == ""  # exactly one line on stdout
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_second_control_plane_on_a_port_in_use_fails_instead_of_sharing_it(tmp_path: Path) -> None:
    """gRPC's default SO_REUSEPORT let a second control plane bind beside the first, and the kernel split
    calls between two databases. The second must refuse to start, naming the address: in one line and
    with the data plane's exit status (1), not a 15-frame RuntimeError traceback."""

    def start(name: str, listen: str) -> subprocess.Popen[str]:
        env = {**os.environ, "AETHER_HOME": str(tmp_path / name)}
        db_url = f"sqlite:///{tmp_path / name}.db"
        return subprocess.Popen(
            [sys.executable, "-m", "control_plane", "--listen", listen, "--db-url", db_url],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    first = start("first", "127.0.0.1:0")
    try:
        assert first.stdout is not None
        port = int(first.stdout.readline().strip().rsplit(":", 1)[1])
        second = start("second", f"127.0.0.1:{port}")
        try:
            _, stderr = second.communicate(timeout=60)
        finally:
            if second.poll() is None:
                second.kill()
        assert second.returncode == 1, stderr
        assert stderr.strip().splitlines()[-1] == (
            f"python -m control_plane: error: cannot listen on 127.0.0.1:{port}:"
            " the address is already in use"
        )
        assert "Traceback" not in stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=10)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("AETHER_CANARY_INTERVAL_S", "-1", "a number > 0"),  # was accepted: the canary loop spun a core
        ("AETHER_CANARY_INTERVAL_S", "10s", "a number > 0"),  # was a ValueError traceback
        ("AETHER_MONITOR_INTERVAL_S", "0", "a number > 0"),
        ("AETHER_RETRAIN_INTERVAL_S", "nan", "a number > 0"),
        ("AETHER_JOBS_TICK_S", "-0.5", "a number > 0"),
        # Was an OverflowError traceback and status 1, the monitor loop already started.
        (
            "AETHER_MONITOR_METRICS_ADDR",
            "127.0.0.1:99999",
            "HOST:PORT with a port from 0 to 65535 (e.g. 127.0.0.1:9090)",
        ),
    ],
)
def test_a_bad_loop_interval_is_one_line_naming_the_variable(
    tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    """The background loops read their settings as the server builds its services, after the settings
    the entrypoint checks: a typo was a traceback, and a negative interval made a loop spin a full core."""
    env = {**os.environ, "AETHER_HOME": str(tmp_path / "home"), variable: value}
    db_url = f"sqlite:///{tmp_path / 'meta.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "control_plane", "--listen", "127.0.0.1:0", "--db-url", db_url],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (done.returncode, done.stdout, "Traceback" in done.stderr) == (2, "", False), done.stderr
    last = done.stderr.splitlines()[-1]
    assert last == f"python -m control_plane: error: {variable}: expected {expected}, got {value!r}"


def _future_database(tmp_path: Path) -> str:
    """A SQLite database a newer release migrated (a revision this release does not know)."""
    connection = sqlite3.connect(tmp_path / "future.db")
    with connection:
        connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        connection.execute("INSERT INTO alembic_version VALUES ('0099_future')")
    connection.close()
    return f"sqlite:///{tmp_path / 'future.db'}"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("not a url", "'not a url': Could not parse SQLAlchemy URL"),
        ("under a file", "/afile/sub/aether.db': cannot create its folder: [Errno 20] Not a directory"),
        ("not listening", ":***@127.0.0.1:1/x': cannot open it: connection failed: "),
        ("no driver", "'mysql://u@localhost/x': its database driver is not installed"),
        ("newer", "/future.db': it was migrated by a newer Aether (Can't locate revision identified by"),
        ("bad port", "127.0.0.1:5432x/x': invalid literal for int()"),
        ("bad query", "?timeout=abc': "),
    ],
)
def test_an_unusable_database_url_is_one_line_naming_it_without_its_password(
    tmp_path: Path, case: str, expected: str
) -> None:
    """Each of these printed a traceback of 30 to 140 lines, the PostgreSQL one with the URL's user."""
    (tmp_path / "afile").touch()
    db_url = {
        "not a url": "not a url",
        "under a file": f"sqlite:///{tmp_path / 'afile' / 'sub' / 'aether.db'}",
        "not listening": "postgresql+psycopg://u:pw-secret@127.0.0.1:1/x",
        "no driver": "mysql://u@localhost/x",
        "newer": _future_database(tmp_path),
        "bad port": "postgresql+psycopg://u:pw-secret@127.0.0.1:5432x/x",
        "bad query": f"sqlite:///{tmp_path / 'q.db'}?timeout=abc",
    }[case]
    env = {**os.environ, "AETHER_HOME": str(tmp_path / "home"), "AETHER_DB_URL": db_url}
    done = subprocess.run(
        [sys.executable, "-m", "control_plane", "--listen", "127.0.0.1:0"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (done.returncode, done.stdout, "Traceback" in done.stderr) == (2, "", False), done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith("python -m control_plane: error: AETHER_DB_URL/--db-url '"), last
    assert expected in last and "pw-secret" not in done.stderr
