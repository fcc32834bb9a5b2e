"""Where a Redis consumer group that is lost or new comes back, against a real redis-server: at the saved
trim point (``trimmed_below``), which never moves back below ids already dropped from the applied /
rejected sets, while the stream is the one processed, else at its start; a read blocked when the stream
goes follows the loss. Every entry is counted once."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import feature_registry_pb2 as pb
from control_plane.db import read_session
from control_plane.ingestion import quarantine
from control_plane.ingestion.streaming.materializer import StreamMaterializer
from control_plane.ingestion.streaming.redis_source import RedisStreamSource
from control_plane.ingestion.streaming.state_keys import StateKeys
from control_plane.offline.store import OfflineStore
from tests.integration.ingestion.streaming_support import (
    STREAM,
    Event,
    publish,
    random_events,
    registry_db,
    run_until_idle,
    started_materializer,
)
from tests.integration.ingestion.test_stream_redis_lost import (
    TRIMMING,
    offline_rows,
    other_sensors,
    publish_at,
)

pytestmark = pytest.mark.integration

KEYS = StateKeys.of("clicks", 1, TRIMMING.group)
DAY_MS = 86_400_000
WARNING = "trimmed by an earlier run with a shorter lateness or window"


@dataclasses.dataclass
class TrimmedRun:
    """A materializer that read ``old`` (three days back) and ``recent`` events to idle, and trimmed its
    id sets: the starting point of the lost-group cases."""

    client: redis.Redis
    sessions: sessionmaker[Session]
    materializer: StreamMaterializer
    old: list[Event]
    recent: list[Event]
    view: pb.FeatureView
    entity: pb.Entity


def trimmed_run(redis_url: str, tmp_path: Path, seed: int, old: int = 10, recent: int = 20) -> TrimmedRun:
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    _source, materializer = started_materializer(tmp_path, client, sessions, view, entity, TRIMMING)
    old_events = random_events(old, seed=seed, sensors=3)
    publish_at(client, old_events, int(time.time() * 1000) - 3 * DAY_MS)
    recent_events = random_events(recent, seed=seed + 1, sensors=3)
    publish(client, recent_events)
    run_until_idle(materializer)
    return TrimmedRun(client, sessions, materializer, old_events, recent_events, view, entity)


def counted(sessions: sessionmaker[Session], tmp_path: Path, total: int) -> None:
    """The run's counters and the offline rows hold each of ``total`` events once."""
    with read_session(sessions) as session:
        runs = quarantine.list_runs(session, "clicks")
    assert [(r.records_in, r.accepted, r.quarantined) for r in runs] == [(total, total, 0)]
    assert offline_rows(tmp_path) == total


def test_a_run_with_a_longer_lateness_keeps_the_trim_point_and_a_later_lost_group_counts_none_twice(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The second run's commits wrote its own, earlier trim point over the first's, while the sets stayed
    # trimmed up to the first's: the group lost next came back at the earlier point, and the entries
    # between the two (dropped from the sets) were applied and counted a second time.
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    _source, first = started_materializer(tmp_path, client, sessions, view, entity, TRIMMING)
    now = int(time.time() * 1000)
    old = random_events(10, seed=31, sensors=3)
    publish_at(client, old, now - 3 * DAY_MS)
    mid = random_events(10, seed=32, sensors=3)
    publish_at(client, mid, now - 36 * 3_600_000)  # trimmed by the first run (24 h window, 1 h lateness)
    recent = random_events(20, seed=33, sensors=3)
    publish(client, recent)
    run_until_idle(first)
    first._committer.close()
    trimmed = int(client.get(KEYS.trimmed_below))
    assert trimmed > int(mid[-1].id.split("-")[0]), "mid was not trimmed: the test tests nothing"

    after = random_events(5, seed=34, sensors=3)
    publish(client, after)
    longer = dataclasses.replace(TRIMMING, lateness_s=2 * 86_400)  # a trim point before mid
    with caplog.at_level(logging.WARNING, logger="aether.ingestion.stream"):
        _source, second = started_materializer(tmp_path, client, sessions, view, entity, longer)
    # Its rebuild reads from before the trim point, and the first run's reach was shorter: said so.
    assert WARNING in caplog.text
    run_until_idle(second)
    assert int(client.get(KEYS.trimmed_below)) >= trimmed

    assert client.xgroup_destroy(STREAM, TRIMMING.group)
    last = random_events(5, seed=35, sensors=3)
    publish(client, last)
    run_until_idle(second)
    assert second.totals.accepted == len(after + last)
    counted(sessions, tmp_path, len(old + mid + recent + after + last))


def test_a_group_recreated_at_the_trim_point_moves_it_no_lower_nor_warns_of_a_shorter_lateness(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Re-created at the trim point, the group resumed there: the next trim point, that far before it,
    # went back by the longest window; a second loss then re-applied the entries between. Its rebuild
    # also warned of a run with a shorter lateness or window, when every run had the same.
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    _source, first = started_materializer(tmp_path, client, sessions, view, entity, TRIMMING)
    now = int(time.time() * 1000)
    old = random_events(10, seed=41, sensors=3)
    publish_at(client, old, now - 3 * DAY_MS)
    mid = random_events(10, seed=42, sensors=3)
    publish_at(client, mid, now - 36 * 3_600_000)
    recent = random_events(20, seed=43, sensors=3)
    publish(client, recent)
    run_until_idle(first)
    first._committer.close()
    trimmed = int(client.get(KEYS.trimmed_below))

    assert client.xgroup_destroy(STREAM, TRIMMING.group)  # while no materializer runs
    after = random_events(5, seed=44, sensors=3)
    publish(client, after)
    with caplog.at_level(logging.WARNING, logger="aether.ingestion.stream"):
        _source, second = started_materializer(tmp_path, client, sessions, view, entity, TRIMMING)
    assert WARNING not in caplog.text
    run_until_idle(second)
    assert int(client.get(KEYS.trimmed_below)) >= trimmed

    assert client.xgroup_destroy(STREAM, TRIMMING.group)
    last = random_events(5, seed=45, sensors=3)
    publish(client, last)
    run_until_idle(second)
    assert second.totals.accepted == len(after + last)
    counted(sessions, tmp_path, len(old + mid + recent + after + last))


def blocked_read(client: redis.Redis, timeout_s: float = 30.0) -> None:
    """Returns once a client of ``client``'s server is blocked in an XREADGROUP."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for entry in client.client_list():
            if entry["cmd"] == "xreadgroup" and "b" in entry["flags"]:
                return
        time.sleep(0.01)  # polling the server's own account of the read, not waiting for it to happen
    raise AssertionError("the materializer's read never blocked")


@pytest.mark.parametrize("loss", ["flushall", "delete the stream"])
def test_a_stream_lost_while_the_read_blocks_is_followed_and_counts_each_entry_once(
    redis_url: str, tmp_path: Path, loss: str
) -> None:
    # Redis answers a read blocked on a stream that disappears (FLUSHALL, DEL) with "UNBLOCKED the stream
    # key no longer exists", which was not taken for a lost stream: the step raised and the process
    # exited, where the same loss met by any other command is followed.
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    _source, materializer = started_materializer(tmp_path, client, sessions, view, entity, TRIMMING)
    before = random_events(20, seed=51, sensors=3)
    publish(client, before)
    run_until_idle(materializer)

    materializer.options = dataclasses.replace(TRIMMING, block_ms=60_000)
    outcome: list[object] = []
    step = threading.Thread(target=lambda: outcome.append(call(materializer.step)), daemon=True)
    step.start()
    blocked_read(client)
    if loss == "flushall":
        client.flushall()
    else:
        client.delete(STREAM)
    after = random_events(10, seed=52, sensors=3)
    publish(client, after)  # what the re-created group's read, blocked again, answers with
    step.join(30)
    assert not step.is_alive(), "the step never came back"
    assert not isinstance(outcome[0], Exception), str(outcome[0])
    materializer.options = TRIMMING
    run_until_idle(materializer)

    assert materializer.totals.accepted == len(before + after)
    counted(sessions, tmp_path, len(before + after))


def call(operation: Callable[[], object]) -> object:
    """``operation()``'s result, or the exception it raised."""
    try:
        return operation()
    except Exception as exc:
        return exc


def test_a_starting_materializer_creates_a_destroyed_group_at_the_trim_point_not_at_0(
    redis_url: str, tmp_path: Path
) -> None:
    # The source of a starting materializer created the group at "0" and the materializer moved it to the
    # trim point only afterwards (XGROUP SETID): a consumer of the group reading in between was delivered
    # the whole retained stream, and applied and counted the trimmed entries a second time.
    run = trimmed_run(redis_url, tmp_path, seed=61)
    view, entity = run.view, run.entity
    client, sessions, running, old, recent = run.client, run.sessions, run.materializer, run.old, run.recent
    assert client.exists(KEYS.trimmed_below)

    assert client.xgroup_destroy(STREAM, TRIMMING.group)
    after = random_events(5, seed=63, sensors=3)
    publish(client, after)
    starting = RedisStreamSource(client, STREAM, TRIMMING.group, "c2")  # a second materializer's
    running.step()  # the running one reads between the starting one's source and its materializer
    offline = OfflineStore(str(tmp_path / "offline"))
    StreamMaterializer(view, entity, starting, client, sessions, offline, TRIMMING)
    run_until_idle(running)

    assert running.totals.accepted == len(old + recent + after)
    counted(sessions, tmp_path, len(old + recent + after))


def test_a_stream_deleted_and_refilled_with_older_ids_is_read_from_its_start(
    redis_url: str, tmp_path: Path
) -> None:
    # A DEL of the stream key, the state keys kept, fails the group's commands with NOGROUP as a group
    # destroyed alone does: the group came back just before the trim point, and the new stream's entries
    # with explicit ids older than it were never delivered (neither accepted nor quarantined, no warning).
    run = trimmed_run(redis_url, tmp_path, seed=71)
    client, sessions, materializer, old, recent = (
        run.client,
        run.sessions,
        run.materializer,
        run.old,
        run.recent,
    )
    trimmed = int(client.get(KEYS.trimmed_below))

    assert client.delete(STREAM)
    refilled = other_sensors(random_events(10, seed=73, sensors=3))
    publish_at(client, refilled, int(time.time() * 1000) - 36 * 3_600_000)  # before the trim point
    assert int(refilled[-1].id.split("-")[0]) < trimmed
    run_until_idle(materializer)

    assert not client.xpending(STREAM, TRIMMING.group)["pending"]
    assert materializer.totals.accepted == len(old + recent + refilled)
    counted(sessions, tmp_path, len(old + recent + refilled))


def test_a_refilled_stream_whose_group_is_lost_later_counts_none_of_its_entries_twice(
    redis_url: str, tmp_path: Path
) -> None:
    # The group of a refilled stream came back at "0", but the old stream's state stayed: its trim point
    # and its applied ids, the newest of which the new stream does not hold. A group lost later was then
    # re-created at "0" again, and the new stream's entries already trimmed from the sets were applied
    # and counted a second time.
    _url, sessions, view, entity = registry_db(tmp_path)
    client = redis.Redis.from_url(redis_url)
    _source, materializer = started_materializer(tmp_path, client, sessions, view, entity, TRIMMING)
    now = int(time.time() * 1000)
    old = random_events(10, seed=71, sensors=3)
    publish_at(client, old, now - 3 * DAY_MS)
    recent = random_events(20, seed=72, sensors=3)
    publish(client, recent)
    run_until_idle(materializer)
    assert client.exists(KEYS.trimmed_below)

    assert client.delete(STREAM)
    first = other_sensors(random_events(10, seed=73, sensors=3))
    publish_at(client, first, now - 4 * DAY_MS)
    second = other_sensors(random_events(10, seed=74, sensors=3))
    publish_at(client, second, now - 36 * 3_600_000)
    run_until_idle(materializer)
    third = other_sensors(
        random_events(3, seed=75, sensors=3)
    )  # read after a trim point of the new stream's own
    publish_at(client, third, now - 35 * 3_600_000)
    run_until_idle(materializer)
    applied = {m.decode() for m in client.zrange(KEYS.applied, 0, -1)}
    assert not applied >= {e.id for e in first}, "nothing of the refill was trimmed: the test tests nothing"

    assert client.xgroup_destroy(STREAM, TRIMMING.group)
    run_until_idle(materializer)

    total = len(old + recent + first + second + third)
    assert materializer.totals.accepted == total
    counted(sessions, tmp_path, total)
    assert not client.xpending(STREAM, TRIMMING.group)["pending"]


def test_a_trim_point_from_before_a_refill_is_not_committed_into_the_new_streams_state(
    redis_url: str, tmp_path: Path
) -> None:
    # The trim point the materializer held in memory is the old stream's: committed after the new stream's
    # group reset the state, it marked the new stream's entries not read yet as processed, and a group
    # destroyed before they were read skipped them for good.
    run = trimmed_run(redis_url, tmp_path, seed=81, old=25, recent=30)
    client, sessions, materializer, old, recent = (
        run.client,
        run.sessions,
        run.materializer,
        run.old,
        run.recent,
    )
    materializer._next_trim = float("inf")  # no new trim point of its own until the refill is followed

    assert client.delete(STREAM)
    fresh = other_sensors(
        random_events(20, seed=83, sensors=3)
    )  # older in stream time than the trim point held
    publish_at(client, fresh, int(time.time() * 1000) - 2 * DAY_MS)
    assert materializer.step().accepted == TRIMMING.count  # one batch of the new stream, not all of it
    assert client.xgroup_destroy(STREAM, TRIMMING.group)
    run_until_idle(materializer)

    assert materializer.totals.accepted == len(old + recent + fresh)
    counted(sessions, tmp_path, len(old + recent + fresh))
