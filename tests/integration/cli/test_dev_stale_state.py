"""`aetherctl dev status|up|down` over state that no longer tells the truth by itself: a plane's log
truncated since it started (its "listening on" line gone), and a Redis pid file naming a redis-server
that is not the one at AETHER_REDIS_URL."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.integration.cli.test_dev_cli import aetherctl, dev_env, states
from tests.support.ports import HeldPort, refused_address
from tests.support.redis_server import RedisServer

__all__ = ["dev_env"]  # the fixture, used by name


def test_a_plane_whose_log_was_truncated_is_still_running(dev_env: dict[str, str]) -> None:
    """Readiness of a running plane read its address from the "listening on" line of its log; after a
    copytruncate log rotation the line was gone and a healthy control plane showed "not answering
    (stopping?)" (`dev status` exit 1, `dev up` waited and failed). It answers at its configured address."""
    home = Path(dev_env["AETHER_HOME"]) / "dev"
    up = aetherctl(dev_env, "dev", "up")
    try:
        assert up.returncode == 0, up.stderr
        for plane in ("control-plane", "data-plane"):
            (home / f"{plane}.log").write_text("")  # what logrotate's copytruncate leaves
        status = aetherctl(dev_env, "dev", "status")
        assert status.returncode == 0, status.stdout
        assert set(states(status.stdout).values()) == {"running"}, status.stdout
        again = aetherctl(dev_env, "dev", "up", "--wait", "5")
        assert again.returncode == 0, again.stderr
        assert set(states(again.stdout).values()) == {"already"}, again.stdout
    finally:
        down = aetherctl(dev_env, "dev", "down")
    assert down.returncode == 0, down.stderr


def test_a_pid_file_naming_another_redis_server_is_not_this_stacks_redis(dev_env: dict[str, str]) -> None:
    """A pid file naming a live redis-server that listens elsewhere (a stale pid reused, or
    AETHER_REDIS_URL moved to another port) was shown as this stack's Redis "not answering (stopping?)",
    `dev up` waited for it and failed, and `dev down` stopped that unrelated server."""
    other = RedisServer()
    other.start()
    try:
        assert other.process is not None
        home = Path(dev_env["AETHER_HOME"]) / "dev"
        home.mkdir(parents=True)
        (home / "redis.pid").write_text(f"{other.process.pid}\n")
        status = aetherctl(dev_env, "dev", "status")
        assert "not answering" not in status.stdout, status.stdout
        assert states(status.stdout)["redis"] == "stopped", status.stdout
        down = aetherctl(dev_env, "dev", "down")
        assert down.returncode == 0, down.stderr
        assert other.process.poll() is None, "dev down stopped a redis-server that is not the stack's"
        os.kill(other.process.pid, 0)
    finally:
        other.close()


def test_a_control_plane_that_cannot_bind_its_address_is_not_reported_started(
    dev_env: dict[str, str], tmp_path: Path
) -> None:
    """A second stack configured on the first one's control-plane address: its control plane exits
    ("address already in use"). Readiness of a freshly started plane is its own "listening on" line, not
    "something answers at the configured address": the first stack's server passed for it, `dev up`
    said "started" (exit 0), and the second stack ran its data plane against another stack."""
    with HeldPort() as redis_port, HeldPort() as data_plane:  # until the second stack's servers bind them
        second = dict(
            dev_env,
            AETHER_HOME=str(tmp_path / "second"),
            AETHER_REDIS_URL=f"redis://{redis_port.address}/0",
            AETHER_DATA_PLANE_ADDR=data_plane.address,
        )
        up = aetherctl(dev_env, "dev", "up")
        try:
            assert up.returncode == 0, up.stderr
            clash = aetherctl(second, "dev", "up", "--wait", "30")
            assert clash.returncode != 0, clash.stdout
            assert "control plane" in clash.stderr, clash.stderr
            status = aetherctl(dev_env, "dev", "status")
            assert status.returncode == 0, status.stdout  # the first stack is untouched
        finally:
            aetherctl(second, "dev", "down")
            down = aetherctl(dev_env, "dev", "down")
        assert down.returncode == 0, down.stderr


def test_the_stacks_redis_is_still_its_own_after_the_url_moved(dev_env: dict[str, str]) -> None:
    """AETHER_REDIS_URL moved to another port after `dev up`: the redis-server on the stack's data folder
    is still the stack's. Taken as "not this stack's", `dev down` forgot it (and removed its pid file)
    and a `dev up` started a second redis-server on the same append-only files."""
    home = Path(dev_env["AETHER_HOME"]) / "dev"
    up = aetherctl(dev_env, "dev", "up")
    redis_pid = 0
    try:
        assert up.returncode == 0, up.stderr
        redis_pid = int((home / "redis.pid").read_text())
        moved = dict(dev_env, AETHER_REDIS_URL=f"redis://{refused_address()}/0")
        down = aetherctl(moved, "dev", "down")
        assert down.returncode == 0, down.stderr
        assert states(down.stdout)["redis"] == "stopped", down.stdout
        deadline = time.monotonic() + 30
        while Path(f"/proc/{redis_pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # polls observable state; bounded by the deadline
        assert not Path(f"/proc/{redis_pid}").exists(), "the stack's redis-server was left running"
    finally:
        aetherctl(dev_env, "dev", "down")
        if redis_pid and Path(f"/proc/{redis_pid}").exists():
            os.kill(redis_pid, 9)
