"""A stream materializer whose Redis comes back empty (restarted without persistence, or flushed), against
a real redis-server restarted on the same port: it re-creates its consumer group and takes its ownership
back instead of exiting on ``NOGROUP``, and counts every entry of the new stream once."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from control_plane.db import read_session
from control_plane.ingestion import quarantine
from control_plane.ingestion.streaming.options import MaterializerOptions
from control_plane.ingestion.streaming.state_keys import StateKeys
from control_plane.offline.store import OfflineStore
from tests.integration.ingestion.streaming_support import (
    STREAM,
    Event,
    assert_close,
    event_fields,
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
    # The batch's ids, committed after the flush, are those of the stream flushed: the group, created
    # again for the new stream, reset the sets to its own (redis_source.CREATE_GROUP).
    assert applied == {event.id for event in later}
    assert materializer.totals.accepted == len(events) + len(later)
    expected = expected_online(events + later)
    assert_close(read_online(client, view, sorted(expected)), expected)


# Trimmed each step (trim_every_s=0), to the longest window (24 h) and the lateness (1 h: the events below
# reach the stream within it; later ones are quarantined) before the resume point.
TRIMMING = MaterializerOptions(
    count=10, block_ms=20, reclaim_idle_ms=200, reclaim_every_s=0.1, trim_every_s=0.0, lateness_s=3600
)


def other_sensors(events: list[Event]) -> list[Event]:
    """``events`` of sensors 3-5 instead of 0-2: a refill published days back in time (``publish_at``)
    after recent events of the same sensors would be older than every window of its entity."""
    for event in events:
        event.sensor += 3
    return events


def publish_at(client: redis.Redis, events: list[Event], first_ms: int) -> None:
    """``events`` at stream ids ``first_ms-0``, ``first_ms+1-0``, ...: older in stream time than the trim
    point once later entries are read, their event times moved back as far (they were recent: days ahead
    of their stream time, which a rebuild must read back, so nothing was below the trim point)."""
    back = timedelta(milliseconds=int(time.time() * 1000) - first_ms)
    for n, event in enumerate(events):
        event.id = f"{first_ms + n}-0"
        event.ts -= back
        client.xadd(STREAM, event_fields(event), id=event.id)  # type: ignore[arg-type]


def offline_rows(tmp_path: Path) -> int:
    return sum(batch.num_rows for batch in OfflineStore(str(tmp_path / "offline")).scan("clicks", 1))


def counted_once(
    tmp_path: Path,
    client: redis.Redis,
    sessions: Any,
    view: Any,
    events: list[Event],
    totals: Any,
    online: list[Event] | None = None,
) -> None:
    """Each of ``events`` applied once: in the online values (of the sensors of ``online``, when given:
    a flush took the others' away), the offline rows and the run's counters."""
    assert totals.accepted == len(events)
    with read_session(sessions) as session:
        runs = quarantine.list_runs(session, "clicks")
    assert [(r.records_in, r.accepted, r.quarantined) for r in runs] == [(len(events), len(events), 0)]
    assert offline_rows(tmp_path) == len(events)
    expected = expected_online(events if online is None else online)
    assert_close(read_online(client, view, sorted(expected)), expected)


def test_a_group_destroyed_alone_is_recreated_past_the_trimmed_entries_and_counts_none_twice(
    redis_url: str, tmp_path: Path
) -> None:
    # The group came back at "0" and read the whole retained stream again: the entries the applied set
    # still held were skipped, but those trimmed from it (older than the trim point) were applied and
    # counted a second time (online windows, offline rows, run counters).
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    _source, materializer = started_materializer(tmp_path, client, sessions, view, entity, TRIMMING)
    old = random_events(25, seed=11, sensors=3)
    publish_at(client, old, int(time.time() * 1000) - 3 * 86_400_000)  # 3 days back in stream time
    recent = random_events(40, seed=12, sensors=3)
    publish(client, recent)
    run_until_idle(materializer)
    keys = StateKeys.of("clicks", 1, TRIMMING.group)
    trimmed = {event.id for event in old} - {m.decode() for m in client.zrange(keys.applied, 0, -1)}
    assert trimmed == {event.id for event in old}, "the old entries were not trimmed: the test tests nothing"

    assert client.xgroup_destroy(STREAM, TRIMMING.group)
    after = random_events(15, seed=13, sensors=3)
    publish(client, after)
    run_until_idle(materializer)
    # And the same once the trim point's own entries are trimmed from the stream too.
    client.xtrim(STREAM, minid=recent[5].id)
    assert client.xgroup_destroy(STREAM, TRIMMING.group)
    last = random_events(5, seed=14, sensors=3)
    publish(client, last)
    run_until_idle(materializer)

    counted_once(tmp_path, client, sessions, view, old + recent + after + last, materializer.totals)
    assert not client.xpending(STREAM, TRIMMING.group)["pending"]


def test_a_flushed_redis_after_a_trim_reads_the_whole_new_stream(redis_url: str, tmp_path: Path) -> None:
    # With the trim point lost with Redis's data, the new stream's entries are each read and counted.
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    _source, materializer = started_materializer(tmp_path, client, sessions, view, entity, TRIMMING)
    old = random_events(25, seed=15, sensors=3)
    publish_at(client, old, int(time.time() * 1000) - 3 * 86_400_000)
    recent = random_events(30, seed=16, sensors=3)
    publish(client, recent)
    run_until_idle(materializer)
    assert client.exists(StateKeys.of("clicks", 1, TRIMMING.group).trimmed_below)

    client.flushall()
    # Older in stream time than the lost trim point: still new to the materializer.
    after = other_sensors(random_events(20, seed=17, sensors=3))
    publish_at(client, after, int(time.time() * 1000) - 2 * 86_400_000)
    run_until_idle(materializer)

    keys = StateKeys.of("clicks", 1, TRIMMING.group)
    assert {m.decode() for m in client.zrange(keys.applied, 0, -1)} <= {event.id for event in after}
    counted_once(tmp_path, client, sessions, view, old + recent + after, materializer.totals, after)


def test_a_group_destroyed_while_stopped_starts_past_the_trimmed_entries(
    redis_url: str, tmp_path: Path
) -> None:
    # The source of the next materializer created the group anew at "0", before the materializer could
    # say where its trim point was: the trimmed entries were applied and counted again.
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    _source, first = started_materializer(tmp_path, client, sessions, view, entity, TRIMMING)
    old = random_events(25, seed=18, sensors=3)
    publish_at(client, old, int(time.time() * 1000) - 3 * 86_400_000)
    recent = random_events(30, seed=19, sensors=3)
    publish(client, recent)
    run_until_idle(first)
    assert client.exists(StateKeys.of("clicks", 1, TRIMMING.group).trimmed_below)

    assert client.xgroup_destroy(STREAM, TRIMMING.group)
    after = random_events(10, seed=20, sensors=3)
    publish(client, after)
    _source, second = started_materializer(tmp_path, client, sessions, view, entity, TRIMMING)
    run_until_idle(second)

    assert second.totals.accepted == len(after)
    with read_session(sessions) as session:
        runs = quarantine.list_runs(session, "clicks")
    total = len(old + recent + after)
    assert [(r.records_in, r.accepted) for r in runs] == [(total, total)]
    assert offline_rows(tmp_path) == total


def test_a_trim_point_from_before_a_flush_is_not_committed_into_the_new_data(
    redis_url: str, tmp_path: Path
) -> None:
    # The trim point the materializer held in memory from before the flush went into its next commits:
    # the new trim point key (the mark a lost group is re-created at) then lay past entries of the new
    # stream not read yet, and a group destroyed before they were read skipped them for good.
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    _source, materializer = started_materializer(tmp_path, client, sessions, view, entity, TRIMMING)
    old = random_events(25, seed=21, sensors=3)
    publish_at(client, old, int(time.time() * 1000) - 3 * 86_400_000)
    recent = random_events(30, seed=22, sensors=3)
    publish(client, recent)
    run_until_idle(materializer)
    materializer._next_trim = float("inf")  # no new trim point of its own until the flush is followed

    client.flushall()
    fresh = other_sensors(
        random_events(20, seed=23, sensors=3)
    )  # older in stream time than the trim point held
    publish_at(client, fresh, int(time.time() * 1000) - 2 * 86_400_000)
    assert materializer.step().accepted == TRIMMING.count  # one batch of the new stream, not all of it
    assert client.xgroup_destroy(STREAM, TRIMMING.group)
    run_until_idle(materializer)

    counted_once(tmp_path, client, sessions, view, old + recent + fresh, materializer.totals, fresh)
