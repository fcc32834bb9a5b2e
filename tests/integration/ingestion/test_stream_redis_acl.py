"""The Redis permissions a stream materializer needs, against a real redis-server with ACL users: the
scripting commands it runs (``EVALSHA`` and ``SCRIPT LOAD``, not ``EVAL``), refused in one line at start
when the user lacks them."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from clients.env_values import ConfigurationError
from control_plane.ingestion.streaming.clock_agreement import RedisClockCheck
from tests.integration.ingestion.streaming_support import (
    STREAM,
    publish,
    random_events,
    registry_db,
    run_until_idle,
    started_materializer,
)
from tests.integration.ingestion.test_stream_group_lost import DAY_MS, counted
from tests.integration.ingestion.test_stream_redis_lost import TRIMMING, publish_at

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
USER = "materializer-acl"


@pytest.fixture
def acl_user(redis_url: str) -> Iterator[tuple[redis.Redis, str]]:
    """An admin client of the test server and its URL; the ACL user a test makes is removed afterwards,
    as the server is shared and a flush keeps users."""
    admin = redis.Redis.from_url(redis_url)
    yield admin, redis_url
    admin.execute_command("ACL", "DELUSER", USER)
    admin.close()


def user_client(admin: redis.Redis, *rules: str) -> redis.Redis:
    admin.execute_command("ACL", "SETUSER", USER, "reset", "on", ">pw", "~*", "&*", "+@all", *rules)
    port = admin.connection_pool.connection_kwargs["port"]
    return redis.Redis(host="127.0.0.1", port=port, username=USER, password="pw")


def test_a_user_without_eval_runs_the_materializer_trims_and_recreates_its_group(
    acl_user: tuple[redis.Redis, str], tmp_path: Path
) -> None:
    # The group was created, and the trim point raised, by EVAL: a user the previous release accepted
    # (its scripts ran by SCRIPT LOAD and EVALSHA) ended the start in a NoPermissionError traceback.
    admin, _url = acl_user
    client = user_client(admin, "-eval")
    _url, sessions, view, entity = registry_db(tmp_path)
    _source, materializer = started_materializer(tmp_path, client, sessions, view, entity, TRIMMING)
    old = random_events(10, seed=91, sensors=3)
    publish_at(admin, old, int(time.time() * 1000) - 3 * DAY_MS)
    recent = random_events(20, seed=92, sensors=3)
    publish(admin, recent)
    run_until_idle(materializer)
    assert admin.exists(materializer.keys.trimmed_below)
    assert admin.xgroup_destroy(STREAM, TRIMMING.group)
    after = random_events(5, seed=93, sensors=3)
    publish(admin, after)
    run_until_idle(materializer)

    counted(sessions, tmp_path, len(old + recent + after))
    client.close()


@pytest.mark.parametrize(
    ("rules", "missing"),
    [(["-evalsha"], "EVALSHA"), (["-script|load"], "SCRIPT LOAD"), (["-@scripting"], "EVALSHA, SCRIPT LOAD")],
)
def test_a_user_without_the_scripting_commands_is_refused_at_start_naming_them(
    acl_user: tuple[redis.Redis, str], tmp_path: Path, rules: list[str], missing: str
) -> None:
    # Such a user started, and failed in a traceback at its first commit of online values (EVALSHA) or
    # the first group it created; until then the CLI ran on as if nothing were wrong.
    admin, url = acl_user
    client = user_client(admin, *rules)
    db_url, sessions, view, entity = registry_db(tmp_path)
    with pytest.raises(ConfigurationError, match=f"may not run {missing} "):
        started_materializer(tmp_path, client, sessions, view, entity, TRIMMING)
    client.close()

    user_url = url.replace("redis://", f"redis://{USER}:pw@")
    env = {
        **os.environ, "AETHER_HOME": str(tmp_path), "AETHER_DB_URL": db_url, "AETHER_REDIS_URL": user_url,
        "AETHER_OFFLINE_ROOT": str(tmp_path / "offline"),
    }  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "control_plane.ingestion.streaming", "--view", "clicks", "--stream", STREAM],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    last = done.stderr.splitlines()[-1] if done.stderr else ""
    assert (done.returncode, "Traceback" in done.stderr) == (2, False), done.stderr
    assert last.startswith(f"error: AETHER_REDIS_URL: Redis user '{USER}' may not run {missing} "), last


def test_a_user_without_time_is_told_the_clocks_were_not_compared_and_the_run_goes_on(
    acl_user: tuple[redis.Redis, str], caplog: pytest.LogCaptureFixture
) -> None:
    """The clock comparison (``clock_agreement.py``) is a diagnosis: a user the materializer needs no
    ``TIME`` for otherwise must not have the run end at its first event refused by time."""
    admin, _url = acl_user
    client = user_client(admin, "-time")
    check = RedisClockCheck(client, "events:acl", 300)
    caplog.set_level(logging.INFO, logger="control_plane.ingestion.streaming.clock_agreement")
    check.once(lambda operation: operation())
    check.once(lambda operation: operation())  # once per run: not read, nor said, again
    said = [r.getMessage() for r in caplog.records if r.name.endswith("clock_agreement")]
    assert len(said) == 1 and "could not read Redis's clock (TIME)" in said[0], said
    client.close()
