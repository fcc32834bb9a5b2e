"""``aetherctl dev up|status|down`` as a user runs it: a separate process starting real services on free
loopback ports, with the state folder in a temporary AETHER_HOME."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.backoff import NoBackoff
from redis.retry import Retry

from clients.errors import FailedPrecondition
from clients.files import private_folder
from control_plane.cli import local_stack
from control_plane.cli.settings import CliSettings
from control_plane.cli.stack_credentials import redis_auth_config
from tests.support.ports import HeldPort
from tests.support.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[3]


def aetherctl(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "control_plane.cli.main", *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.fixture
def dev_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a stack of its own. Its three ports are held for the test (``HeldPort``; the
    stack's redis-server and gRPC servers bind beside the hold): picked free and let go, one was another
    test worker's to take before `dev up` bound it."""
    with HeldPort() as redis_port, HeldPort() as control_plane, HeldPort() as data_plane:
        yield dict(
            os.environ,
            AETHER_HOME=str(tmp_path / "aether"),
            AETHER_REDIS_URL=f"redis://{redis_port.address}/0",
            AETHER_CONTROL_PLANE_ADDR=control_plane.address,
            AETHER_DATA_PLANE_ADDR=data_plane.address,
        )


def serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


def unauthenticated_ping(port: int) -> None:
    """PING without a password, with no retries: redis-py retries the refusal (an AuthenticationError is a
    kind of ConnectionError) three times with a random backoff of up to 2, 4 and 8 s by default."""
    redis.Redis(port=port, retry=Retry(NoBackoff(), 0)).ping()


def states(out: str) -> dict[str, str]:
    """SERVICE -> STATE of a printed dev table (service names may hold one space)."""
    rows = {}
    for line in out.splitlines()[1:]:
        for service in ("redis", "control plane", "data plane"):
            if line.startswith(service + " "):
                rows[service] = line[len(service) :].split()[0]
    return rows


def test_dev_up_starts_the_stack_and_dev_down_stops_it(dev_env: dict[str, str]) -> None:
    home = Path(dev_env["AETHER_HOME"]) / "dev"
    up = aetherctl(dev_env, "dev", "up")
    try:
        assert up.returncode == 0, up.stderr
        assert states(up.stdout) == {"redis": "started", "control plane": "started", "data plane": "started"}
        for key in ("AETHER_REDIS_URL", "AETHER_CONTROL_PLANE_ADDR", "AETHER_DATA_PLANE_ADDR"):
            assert dev_env[key] in up.stdout  # where each one listens
        for name in ("redis", "control-plane", "data-plane"):
            assert str(home / f"{name}.log") in up.stdout
            assert (home / f"{name}.pid").read_text().strip().isdigit()
        for name in ("control-plane", "data-plane"):  # URLs, passwords and all, are not on command lines
            pid = (home / f"{name}.pid").read_text().strip()
            assert b"redis://" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert redis_answers(dev_env["AETHER_REDIS_URL"])
        assert serving(dev_env["AETHER_CONTROL_PLANE_ADDR"])
        assert serving(dev_env["AETHER_DATA_PLANE_ADDR"])
        assert (Path(dev_env["AETHER_HOME"]) / "aether.db").exists()  # the embedded SQLite default

        again = aetherctl(dev_env, "dev", "up")
        assert again.returncode == 0, again.stderr
        assert set(states(again.stdout).values()) == {"already"}  # "already running"
        status = aetherctl(dev_env, "dev", "status")
        assert status.returncode == 0
        assert set(states(status.stdout).values()) == {"running"}
    finally:
        down = aetherctl(dev_env, "dev", "down")
    assert down.returncode == 0, down.stderr
    assert states(down.stdout) == {"redis": "stopped", "control plane": "stopped", "data plane": "stopped"}
    assert not list(home.glob("*.pid"))
    assert not redis_answers(dev_env["AETHER_REDIS_URL"])
    assert not serving(dev_env["AETHER_CONTROL_PLANE_ADDR"])
    assert not serving(dev_env["AETHER_DATA_PLANE_ADDR"])

    status = aetherctl(dev_env, "dev", "status")
    assert status.returncode == 1
    assert set(states(status.stdout).values()) == {"stopped"}
    down_again = aetherctl(dev_env, "dev", "down")
    assert down_again.returncode == 0
    assert set(states(down_again.stdout).values()) == {"not"}  # "not running"


def test_status_never_prints_the_redis_password(dev_env: dict[str, str]) -> None:
    port = dev_env["AETHER_REDIS_URL"].rsplit(":", 1)[1]
    env = dict(dev_env, AETHER_REDIS_URL=f"redis://:TopSecretPw@127.0.0.1:{port}")
    status = aetherctl(env, "dev", "status")
    assert states(status.stdout)["redis"] == "stopped"
    assert "TopSecretPw" not in status.stdout + status.stderr
    assert f"redis://127.0.0.1:{port}" in status.stdout


@pytest.mark.parametrize("form", ["userinfo", "query"])
def test_dev_up_starts_redis_with_the_password_of_its_url(dev_env: dict[str, str], form: str) -> None:
    """redis-server was started without the URL's password: every readiness PING failed authentication,
    and `dev up` waited out --wait, then said Redis was not ready. The query form (`?password=`, which the
    README documents and the clients read) was still ignored: `dev up` blamed "another redis-server"."""
    port = dev_env["AETHER_REDIS_URL"].rsplit(":", 1)[1].split("/")[0]
    password = 'Top Secret"\\é%'
    if form == "userinfo":
        url = f"redis://:{quote(password, safe='')}@127.0.0.1:{port}/0"
    else:  # redis-py decodes a query value twice (parse_qs, then unquote): so is it encoded here
        url = f"redis://127.0.0.1:{port}/0?password={quote(quote(password, safe=''), safe='')}"
    env = dict(dev_env, AETHER_REDIS_URL=url)
    home = Path(dev_env["AETHER_HOME"]) / "dev"
    started = time.monotonic()
    up = aetherctl(env, "dev", "up", "--wait", "60")
    try:
        assert up.returncode == 0, up.stderr
        assert time.monotonic() - started < 50  # not a wait for --wait to run out
        assert redis_answers(url)
        with pytest.raises(redis.AuthenticationError):
            unauthenticated_ping(int(port))
        pid = (home / "redis.pid").read_text().strip()
        assert password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert (home / "redis.conf").stat().st_mode & 0o777 == 0o600
        assert set(states(aetherctl(env, "dev", "status").stdout).values()) == {"running"}
    finally:
        aetherctl(env, "dev", "down")
    assert not redis_answers(url)


def _assert_redis_of_config_takes_only(url: str, port: int, folder: Path) -> None:
    """A redis-server started with ``redis_auth_config(url)`` answers a client of ``url`` and refuses one
    without credentials."""
    config = folder / "redis.conf"
    config.write_text(redis_auth_config(url))
    server = subprocess.Popen(
        ["redis-server", str(config), "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not redis_answers(url):
            assert server.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        with pytest.raises(redis.AuthenticationError):
            unauthenticated_ping(port)  # no password, no access
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize(
    "credentials", ["pw", "default:pw", "aether:pw", "aether:" + quote(" a\"b\\c'd é#", safe="")]
)
def test_the_redis_config_takes_the_credentials_of_the_url(tmp_path: Path, credentials: str) -> None:
    with HeldPort() as held:  # until the redis-server binds it
        url = f"redis://{credentials if ':' in credentials else ':' + credentials}@{held.address}/0"
        _assert_redis_of_config_takes_only(url, held.port, tmp_path)


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:{port}/0?password=pw",
        "redis://127.0.0.1:{port}/0?username=aether&password=pw",
        "redis://127.0.0.1:{port}/0?username=default&password=pw",
        "redis://127.0.0.1:{port}?db=0&username=aether&password="
        + quote(quote(" a\"b\\c'd é#&+", safe=""), safe=""),
        "redis://:pw@127.0.0.1:{port}/0?username=aether",  # the user from the query, the password not
        "redis://aether@127.0.0.1:{port}/0?password=pw",  # and the other way round
        "redis://:pw@127.0.0.1:{port}/0?password=pw",  # both forms, the same password
    ],
)
def test_the_redis_config_takes_the_credentials_of_the_url_query(tmp_path: Path, url: str) -> None:
    """`?username=` / `?password=`, which the clients (redis-py, the data plane) send, were not written to
    redis.conf: the stack's Redis ran without a password and refused every client."""
    with HeldPort() as held:  # until the redis-server binds it
        url = url.format(port=held.port)
        assert "requirepass" in redis_auth_config(url)
        _assert_redis_of_config_takes_only(url, held.port, tmp_path)


@pytest.mark.parametrize(
    ("credentials", "named"),
    [
        (":mine@127.0.0.1:{port}/0?password=theirs", "password"),
        ("alice:pw@127.0.0.1:{port}/0?username=bob", "user name"),
    ],
)
def test_a_url_that_gives_its_credentials_twice_differently_fails_dev_up_in_one_line(
    dev_env: dict[str, str], credentials: str, named: str
) -> None:
    """redis-py takes the userinfo's and ignores the query's without a word; dev up says which it means."""
    port = dev_env["AETHER_REDIS_URL"].rsplit(":", 1)[1].split("/")[0]
    env = dict(dev_env, AETHER_REDIS_URL="redis://" + credentials.format(port=port))
    try:
        up = aetherctl(env, "dev", "up", "--wait", "60")
        assert up.returncode == 2, up.stderr
        assert up.stderr.startswith(f"error: AETHER_REDIS_URL gives the {named} twice"), up.stderr
        assert len(up.stderr.strip().splitlines()) == 1
        for secret in ("mine", "theirs"):
            assert secret not in up.stderr
        assert not list((Path(dev_env["AETHER_HOME"]) / "dev").glob("*.pid"))
        assert not redis_answers(f"redis://127.0.0.1:{port}/0")
    finally:
        # dev down starts nothing from the URL's credentials, so it works with this URL too.
        assert aetherctl(env, "dev", "down").returncode == 0


def test_a_redis_that_refuses_the_password_fails_dev_up_at_once(dev_env: dict[str, str]) -> None:
    """A Redis already on the URL's port with another password: `dev up` said nothing of the password."""
    port = int(dev_env["AETHER_REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
    other = RedisServer(port, args=["--requirepass", "another"], password="another")
    other.start()
    try:
        env = dict(dev_env, AETHER_REDIS_URL=f"redis://:mine@127.0.0.1:{port}/0")
        up = aetherctl(env, "dev", "up", "--wait", "60")
        status = aetherctl(env, "dev", "status")
    finally:
        other.close()
    assert up.returncode == 1
    assert up.stderr.startswith(
        f"error: FAILED_PRECONDITION: redis at redis://127.0.0.1:{port}/0 refuses the credentials of "
        "AETHER_REDIS_URL"
    ), up.stderr
    assert "mine" not in up.stderr
    assert not (Path(dev_env["AETHER_HOME"]) / "dev" / "control-plane.pid").exists()
    assert states(status.stdout)["redis"] == "refuses" and status.returncode == 1


def test_a_service_that_cannot_start_leaves_nothing_running(dev_env: dict[str, str]) -> None:
    host, port = dev_env["AETHER_CONTROL_PLANE_ADDR"].rsplit(":", 1)
    with socket.socket() as squatter:  # the control plane's port is taken
        # SO_REUSEADDR, to bind beside the fixture's hold of the port; listening, it keeps the plane out.
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((host, int(port)))
        squatter.listen()
        up = aetherctl(dev_env, "dev", "up")
    assert up.returncode == 1
    assert up.stderr.startswith("error: FAILED_PRECONDITION: control plane exited")
    assert not redis_answers(dev_env["AETHER_REDIS_URL"])  # the redis it had started is stopped again
    assert not list((Path(dev_env["AETHER_HOME"]) / "dev").glob("*.pid"))


def test_a_missing_redis_server_says_how_to_install_it(dev_env: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    up = aetherctl({**dev_env, "PATH": str(empty)}, "dev", "up")
    assert up.returncode == 1
    assert "redis-server is not on PATH" in up.stderr
    assert "apt-get install redis-server" in up.stderr
    assert not (Path(dev_env["AETHER_HOME"]) / "dev" / "control-plane.pid").exists()


def test_the_online_store_survives_dev_down_and_up(dev_env: dict[str, str]) -> None:
    """Like the SQL database and the offline store in AETHER_HOME, Redis keeps its data across a restart
    of the stack (it used to run without persistence, so every `dev down` emptied the online store)."""
    up = aetherctl(dev_env, "dev", "up")
    try:
        assert up.returncode == 0, up.stderr
        client = redis.Redis.from_url(dev_env["AETHER_REDIS_URL"])
        client.set("ae:{zone:17}:zone_demand:v1", b"blob")
        client.xadd("bookings", {"zone_id": "17"})
        client.close()
        assert aetherctl(dev_env, "dev", "down").returncode == 0
        assert not redis_answers(dev_env["AETHER_REDIS_URL"])
        up = aetherctl(dev_env, "dev", "up")
        assert up.returncode == 0, up.stderr
        client = redis.Redis.from_url(dev_env["AETHER_REDIS_URL"])
        assert client.get("ae:{zone:17}:zone_demand:v1") == b"blob"
        assert client.xlen("bookings") == 1
        client.close()
    finally:
        aetherctl(dev_env, "dev", "down")


def test_with_auth_on_the_data_plane_gets_a_token_to_follow_the_registry(dev_env: dict[str, str]) -> None:
    """With AETHER_ADMIN_TOKEN set for the stack and no AETHER_TOKEN, the data plane's registry watch was
    refused (UNAUTHENTICATED) and a fresh stack never became ready; it now sends the read-only token."""
    env = dict(dev_env, AETHER_ADMIN_TOKEN="admin-secret", AETHER_READONLY_TOKEN="read-secret")
    env.pop("AETHER_TOKEN", None)
    up = aetherctl(env, "dev", "up", "--wait", "30")
    try:
        assert up.returncode == 0, up.stderr
        assert serving(dev_env["AETHER_DATA_PLANE_ADDR"])
        log = (Path(dev_env["AETHER_HOME"]) / "dev" / "data-plane.log").read_text()
        assert "UNAUTHENTICATED" not in log
    finally:
        aetherctl(env, "dev", "down")


def test_the_control_plane_flag_overrides_the_variable_for_the_stack(dev_env: dict[str, str]) -> None:
    """`aetherctl --control-plane ADDR dev up|status` ignored the flag: the stack came up at
    $AETHER_CONTROL_PLANE_ADDR while every other command looked for it at ADDR."""
    with HeldPort() as held:  # until the stack's control plane binds it
        flag = held.address
        up = aetherctl(dev_env, "--control-plane", flag, "dev", "up")
        try:
            assert up.returncode == 0, up.stderr
            assert serving(flag) and not serving(dev_env["AETHER_CONTROL_PLANE_ADDR"])
            assert serving(dev_env["AETHER_DATA_PLANE_ADDR"])  # it follows the registry at the flag's address
            status = aetherctl(dev_env, "--control-plane", flag, "dev", "status")
            assert status.returncode == 0 and flag in status.stdout
        finally:
            down = aetherctl(dev_env, "--control-plane", flag, "dev", "down")
        assert down.returncode == 0 and not serving(flag)


_DEMO_LIKE = """
import sys, time
from pathlib import Path
from control_plane.cli.local_stack import start_stack
from control_plane.cli.settings import CliSettings
home = Path(sys.argv[1])
settings = CliSettings(home=home, db_url=f"sqlite:///{home / 'aether.db'}", redis_url=sys.argv[2],
                       control_plane_addr=sys.argv[3], data_plane_addr=sys.argv[4])
start_stack(settings)
print("ready", flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    """Ended: no such process, or a zombie (its parent, the killed demo, is gone; init reaps it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


def _port_free(address: str) -> bool:
    host, port = address.removeprefix("redis://").split("/")[0].rsplit(":", 1)
    with socket.socket() as sock:
        # As a server binds (SO_REUSEADDR): the connections the stack closed stay in TIME_WAIT for a minute.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
            sock.listen()
        except OSError:
            return False
    return True


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_the_stack_of_a_process_killed_with_sigkill_ends_with_it(dev_env: dict[str, str]) -> None:
    """The demo's stack (start_stack) outlived a demo killed with SIGKILL (a test timeout, the OOM killer):
    redis-server and both planes kept their ports, files and CPU until someone found them."""
    home = Path(dev_env["AETHER_HOME"])
    addresses = [
        dev_env[k] for k in ("AETHER_REDIS_URL", "AETHER_CONTROL_PLANE_ADDR", "AETHER_DATA_PLANE_ADDR")
    ]
    demo = subprocess.Popen(
        [sys.executable, "-c", _DEMO_LIKE, str(home), *addresses],
        env=dev_env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert demo.stderr is not None
    pids: list[int] = []
    try:
        assert demo.stdout is not None
        while (line := demo.stdout.readline()) != "ready\n":  # the stack's table, then "ready"
            assert line, f"the stack did not start: {demo.stderr.read()}"
        pids = [int(p.read_text()) for p in sorted((home / "dev").glob("*.pid"))]
        assert len(pids) == 3 and not any(map(_gone, pids))
        demo.kill()
        demo.wait()
        deadline = time.monotonic() + 10
        while not (all(map(_gone, pids)) and all(map(_port_free, addresses))):
            assert time.monotonic() < deadline, f"still running: {[p for p in pids if not _gone(p)]}"
            time.sleep(0.05)
    finally:
        demo.kill()
        for pid in pids:  # the fix failing: do not leave the stack behind for the next test
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_dev_up_waits_for_another_dev_up_or_down_on_the_same_home(dev_env: dict[str, str]) -> None:
    """Two `dev up` at once on one AETHER_HOME both started every service (one redis-server exiting at
    once, "Address already in use"), wrote the same pid files and truncated the same logs, and both said
    "started". Each now holds the stack folder's lock from start to end: a second one waits for it and
    then finds the stack running, or (the first still busy after --wait) fails saying why, starting
    nothing."""
    folder = private_folder(Path(dev_env["AETHER_HOME"]) / "dev")
    descriptor = os.open(folder / "stack.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(descriptor, fcntl.LOCK_EX)  # as another `dev up` holds it, for as long as this test wants
    try:
        try:
            up = aetherctl(dev_env, "dev", "up", "--wait", "2")
        finally:
            os.close(descriptor)
        assert up.returncode == 1 and up.stdout == "", up.stdout
        assert up.stderr.startswith("error: FAILED_PRECONDITION: another `aetherctl dev up` or `dev down`")
        assert len(up.stderr.splitlines()) == 1 and "still running after 2s" in up.stderr
        assert not list(folder.glob("*.pid")) and not redis_answers(dev_env["AETHER_REDIS_URL"])

        # Two at once: one starts the stack, the other waits and finds every service running.
        command = [sys.executable, "-m", "control_plane.cli.main", "dev", "up", "--wait", "120"]
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        both = [subprocess.Popen(command, env=dev_env, cwd=REPO, **pipes) for _ in range(2)]
        outs = [process.communicate(timeout=300) for process in both]
        assert [process.returncode for process in both] == [0, 0], outs
        found = sorted(sorted(set(states(out).values())) for out, _ in outs)
        assert found == [["already"], ["started"]], outs
    finally:
        down = aetherctl(dev_env, "dev", "down")
    assert down.returncode == 0, down.stderr
    assert states(down.stdout) == {"redis": "stopped", "control plane": "stopped", "data plane": "stopped"}


def test_a_redis_that_exits_at_start_is_reported_failed_though_another_answers(
    dev_env: dict[str, str],
) -> None:
    """The stack's redis-server, started while another Redis holds its address, exits at once ("Address
    already in use"); readiness was a PING, which the other answered, so it was reported "started" with
    the pid of a process already gone. Ready now means the Redis answering is the one started."""
    settings = CliSettings.from_env(dev_env)
    folder = private_folder(settings.home / "dev" / "redis").parent  # its data folder, as `dev up` makes it
    redis_service = local_stack._services(settings, folder)[0]
    other = RedisServer(int(dev_env["AETHER_REDIS_URL"].rsplit(":", 1)[1].split("/")[0]))
    other.start()
    try:
        with pytest.raises(FailedPrecondition) as failed:
            local_stack._start(redis_service, folder, settings, wait_s=60)
        assert failed.value.message.startswith("redis exited with status 1 before it was ready")
        assert "Address already in use" in failed.value.message  # the log's last lines
        assert not (folder / "redis.pid").exists()
        assert redis_answers(other.url)  # the other one, untouched
    finally:
        other.close()


def test_a_live_control_plane_that_does_not_answer_is_not_taken_as_running(dev_env: dict[str, str]) -> None:
    """After SIGTERM a control plane stops answering while its process lives on (it drains), and `dev up`
    took any live pid as "already running" (exit 0, nothing started) and `dev status` said "running"
    while every call was refused. A process that does not answer (stopped here with SIGSTOP, alive and
    deaf) is shown as such; `dev up` waits for it to answer or exit (bounded by --wait), starting a new
    one once it exited, and fails naming it when it does neither."""
    home = Path(dev_env["AETHER_HOME"]) / "dev"
    up = aetherctl(dev_env, "dev", "up")
    deaf = 0
    try:
        assert up.returncode == 0, up.stderr
        deaf = int((home / "control-plane.pid").read_text())
        os.kill(deaf, signal.SIGSTOP)

        status = aetherctl(dev_env, "dev", "status")
        assert status.returncode == 1, status.stdout
        assert states(status.stdout)["control plane"] == "not", status.stdout
        assert "not answering (stopping?)" in status.stdout

        refused = aetherctl(dev_env, "dev", "up", "--wait", "2")
        assert refused.returncode != 0, refused.stdout
        assert f"control plane (pid {deaf}) is alive but did not answer within 2s" in refused.stderr
        assert not serving(dev_env["AETHER_CONTROL_PLANE_ADDR"])

        waiting = subprocess.Popen(
            [sys.executable, "-m", "control_plane.cli.main", "dev", "up", "--wait", "120"],
            env=dev_env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert waiting.stderr is not None
        notice = waiting.stderr.readline()  # observable: it found the deaf one and waits for it
        assert f"control plane (pid {deaf}) is alive but does not answer" in notice, notice
        os.kill(deaf, signal.SIGKILL)  # it exits: the waiting `dev up` starts a new one
        out, err = waiting.communicate(timeout=120)
        assert waiting.returncode == 0, notice + err
        assert states(out)["control plane"] == "started", out
        assert int((home / "control-plane.pid").read_text()) != deaf
        assert serving(dev_env["AETHER_CONTROL_PLANE_ADDR"])
        status = aetherctl(dev_env, "dev", "status")
        assert status.returncode == 0, status.stdout
        assert set(states(status.stdout).values()) == {"running"}
    finally:
        if deaf:
            with contextlib.suppress(ProcessLookupError):
                os.kill(deaf, signal.SIGKILL)
        down = aetherctl(dev_env, "dev", "down")
    assert down.returncode == 0, down.stderr


def test_down_gives_the_drain_the_running_control_plane_was_started_with(dev_env: dict[str, str]) -> None:
    """`dev down`'s grace follows the drain of the control plane it stops, read from that process's own
    environment: a `dev down` from a shell without AETHER_CONTROL_PLANE_DRAIN_S gave a control plane
    started with a 30 s drain the default 10 s, and SIGKILLed it while it drained a stuck run."""
    from control_plane.cli.dev import down_grace
    from control_plane.settings import ControlPlaneSettings

    this_shell = {k: v for k, v in dev_env.items() if k != "AETHER_CONTROL_PLANE_DRAIN_S"}
    up = aetherctl({**this_shell, "AETHER_CONTROL_PLANE_DRAIN_S": "30"}, "dev", "up")
    try:
        assert up.returncode == 0, up.stderr
        running = local_stack.control_plane_environment(CliSettings.from_env(this_shell))
        assert running is not None and running["AETHER_CONTROL_PLANE_DRAIN_S"] == "30"
        assert down_grace(None, running) >= 30 + ControlPlaneSettings.shutdown_grace_s
        assert down_grace(None, this_shell) < 30  # what this shell alone would have given
    finally:
        down = aetherctl(this_shell, "dev", "down")
    assert down.returncode == 0, down.stderr
    assert local_stack.control_plane_environment(CliSettings.from_env(this_shell)) is None  # stopped
