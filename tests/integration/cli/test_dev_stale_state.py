"""`aetherctl dev status|up|down` over state that no longer tells the truth by itself: a plane's log
truncated since it started (its "listening on" line gone), and a Redis pid file naming a redis-server
that is not the one at AETHER_REDIS_URL."""

from __future__ import annotations

import os
from pathlib import Path

from tests.integration.cli.test_dev_cli import aetherctl, dev_env, states
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
