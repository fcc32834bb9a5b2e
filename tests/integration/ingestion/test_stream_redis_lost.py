"""A stream materializer whose Redis comes back empty (restarted without persistence, or flushed), against
a real redis-server restarted on the same port: it re-creates its consumer group and takes its ownership
back instead of exiting on ``NOGROUP``, and counts every entry of the new stream once."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import redis

from control_plane.db import read_session
from control_plane.ingestion import quarantine
from control_plane.ingestion.streaming.commit import StateKeys
from control_plane.ingestion.streaming.materializer import MaterializerOptions
from tests.integration.ingestion.streaming_support import (
    STREAM,
    assert_close,
    expected_online,
    publish,
    random_events,
    read_online,
    registry_db,
    run_until_idle,
    started_materializer,
)
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

OPTIONS = MaterializerOptions(count=300, block_ms=20, reclaim_idle_ms=200, reclaim_every_s=0.1)


def test_a_redis_restarted_empty_is_followed_and_each_new_entry_counted_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The group was created only at start: the first read after the restart failed with NOGROUP (a
    # ResponseError, not retried) and the materializer exited, though it waits out every other outage.
    server = RedisServer()
    server.start()
    try:
        _url, sessions, view, entity = registry_db(tmp_path)
        client = redis.Redis.from_url(server.url)
        _source, materializer = started_materializer(tmp_path, client, sessions, view, entity, OPTIONS)
        before = random_events(40, seed=7, sensors=3)
        publish(client, before)
        run_until_idle(materializer)

        server.stop()
        server.start()  # empty: no RDB, no AOF
        # Logged after the loss and before the materializer notices it: new entries, to be counted.
        after = random_events(30, seed=8, sensors=3)
        publish(client, after)
        with caplog.at_level(logging.WARNING, logger="aether.ingestion.stream"):
            run_until_idle(materializer)

        keys = StateKeys.of("clicks", 1, OPTIONS.group)
        applied = {member.decode() for member in client.zrange(keys.applied, 0, -1)}
        assert applied == {event.id for event in after}
        assert not client.xpending(STREAM, OPTIONS.group)["pending"]
        assert materializer.totals.accepted == len(before) + len(after)
        with read_session(sessions) as session:
            runs = quarantine.list_runs(session, "clicks")
        assert [(r.records_in, r.accepted) for r in runs] == [(70, 70)]
        # The windows in memory kept the events applied before the loss: each event counts once.
        expected = expected_online(before + after)
        assert_close(read_online(client, view, sorted(expected)), expected)
        assert f"consumer group 'materializer' of stream '{STREAM}' was lost" in caplog.text
        assert "not read before the loss are lost with it" in caplog.text
    finally:
        server.close()


def test_a_flush_between_a_batchs_check_and_its_commit_commits_it_once(
    redis_url: str, tmp_path: Path
) -> None:
    # The flush changed the watched keys, so EXEC refused the batch; the check after it found the owner key
    # gone (the materializer exited as fenced out) and, with ownership taken back, would call the batch a
    # duplicate though nothing of it had been applied.
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    _source, materializer = started_materializer(tmp_path, client, sessions, view, entity, OPTIONS)
    events = random_events(20, seed=9, sensors=3)
    publish(client, events)
    committer = materializer._committer
    commit = committer.commit

    def flushing_first(*args: Any, **kwargs: Any) -> int:
        """Fault wrapper, once: a FLUSHALL lands after the batch's check, before its MULTI/EXEC."""
        committer.commit = commit  # type: ignore[method-assign]
        client.flushall()
        return commit(*args, **kwargs)

    committer.commit = flushing_first  # type: ignore[method-assign]
    later = random_events(10, seed=10, sensors=3)
    stats = materializer.step()
    assert stats.accepted == len(events)
    publish(client, later)
    run_until_idle(materializer)

    keys = StateKeys.of("clicks", 1, OPTIONS.group)
    applied = {member.decode() for member in client.zrange(keys.applied, 0, -1)}
    assert applied == {event.id for event in events + later}
    assert materializer.totals.accepted == len(events) + len(later)
    expected = expected_online(events + later)
    assert_close(read_online(client, view, sorted(expected)), expected)
