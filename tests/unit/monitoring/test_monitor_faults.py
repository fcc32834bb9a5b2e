"""The monitor against faults, on a real redis-server and a real database: an entry it cannot decode is
counted malformed and skipped, across restarts too; a tick that fails part-way (the database locked, a
reference that cannot be read for a while, Redis restarted) is picked up by the next one, and every
entry is indexed, windowed and counted exactly once."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
import redis.asyncio
import sqlalchemy.exc
from google.protobuf import json_format
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import monitoring_pb2 as pb
from clients.errors import FailedPrecondition, InvalidArgument
from control_plane.artifacts.store import ArtifactStore
from control_plane.db import (
    create_db_engine,
    create_session_factory,
    upgrade_to_head,
    write_session,
)
from control_plane.monitoring.config import effective, get_config, put_config
from control_plane.monitoring.feedback import IndexedPrediction, index_predictions, record_feedback
from control_plane.monitoring.monitor import Monitor
from control_plane.monitoring.profiles import ReferenceCache, register_reference_profile
from control_plane.monitoring.tables import MonitorConfigRow
from control_plane.monitoring.window_reports import MAX_REPORT_ATTEMPTS
from tests.support.redis_server import RedisServer
from tests.unit.monitoring.conftest import register_version
from tests.unit.monitoring.world import (
    COMPLETE_WINDOW_START_US,
    SETTINGS,
    STREAM,
    T0,
    World,
    classify,
    configure,
    entry,
    predicted,
)


def poison(i: int) -> dict[bytes, bytes]:
    """An entry whose output name is not UTF-8: it used to raise UnicodeDecodeError out of the tick."""
    fields = entry(i)
    for suffix in (b"", b":dtype", b":shape"):
        fields[b"output:sc\xffore" + suffix] = fields.pop(b"output:score" + suffix)
    return fields


def register_reference(world: World) -> str:
    version = register_version(world.sessions, world.store, "churn-model")
    assert version == 1
    reference = np.random.default_rng(0).normal(size=(200, 3))
    info = register_reference_profile(world.sessions, world.store, "churn-model", 1, reference, actor="test")
    return info.artifact_sha256


async def tick_failing(monitor: Monitor, expected: type[BaseException]) -> None:
    with pytest.raises(expected):
        await monitor.tick()


def take_file(path: Path, replacement: bytes | None = None) -> bytes:
    """Removes the file, or replaces its content, and returns what it held."""
    held = path.read_bytes()
    if replacement is None:
        path.unlink()
    else:
        path.write_bytes(replacement)
    return held


def put_file(path: Path, content: bytes) -> None:
    path.write_bytes(content)


# ---------------------------------------------------------------------------- rows the windows drop


async def test_a_stray_first_row_of_another_width_than_the_reference_is_the_one_dropped(world: World) -> None:
    """The first row's feature count was kept for the version's lifetime: one stray first entry made
    every later, correct row mismatched, so a count window never filled and no drift report came."""
    register_reference(world)  # 3 features
    configure(world.sessions, window_rows=10)
    world.add(entry(0, width=4), *(entry(i) for i in range(1, 21)))
    await world.monitor().tick()
    reports = sorted(world.reports(), key=lambda r: r.window_start_us)
    assert [(r.n_rows, r.mismatched_rows) for r in reports] == [(10, 1), (10, 0)]
    assert all(r.status != pb.DRIFT_STATUS_SCHEMA_MISMATCH for r in reports)
    assert world.dropped("mismatched") == 1.0


async def test_rows_the_windows_drop_are_counted_by_reason_and_in_the_next_report(world: World) -> None:
    """Every row read is in one report or counted as dropped: late rows and rows of another width used
    to be counted only in the windows' memory, and the entry as monitored."""
    configure(world.sessions, window_kind=pb.WINDOW_KIND_TIME, window_seconds=60)
    second = 1_000_000
    world.add(
        entry(0, ts_us=T0 + 1 * second),
        entry(1, ts_us=T0 + 2 * second),
        entry(2, ts_us=T0 + 61 * second),  # the next minute: closes the first window
        entry(3, ts_us=T0 + 3 * second),  # a replica's entry for the closed minute: late
        entry(4, ts_us=T0 + 62 * second, width=4),  # 4 features in a 3-feature window
        entry(5, ts_us=T0 + 63 * second),
    )
    monitor = world.monitor()
    await monitor.tick()
    assert (world.dropped("late"), world.dropped("mismatched")) == (1.0, 1.0)
    assert world.entries("monitored") == 6.0
    # The open window changes shape before it closes: the counts travel with its rows.
    configure(world.sessions, window_kind=pb.WINDOW_KIND_TIME, window_seconds=120)
    world.now = T0 / 1e6 + 300
    await monitor.tick()
    first, second_window = sorted(world.reports(), key=lambda r: r.window_end_us)
    assert (first.n_rows, first.late_rows, first.mismatched_rows) == (2, 0, 0)
    assert (second_window.n_rows, second_window.late_rows, second_window.mismatched_rows) == (2, 1, 1)
    reported = sum(r.n_rows + r.late_rows + r.mismatched_rows for r in world.reports())
    assert reported == 6


async def test_a_restart_builds_the_open_window_again_from_its_pending_entries(world: World) -> None:
    """The entries of the open window were acknowledged as soon as applied: after a restart its rows were
    in no report and not counted dropped (200 logged, 100 reported)."""
    register_reference(world)
    configure(world.sessions, window_rows=100)
    world.add(*(entry(i) for i in range(60)))
    await world.monitor().tick()
    assert world.reports() == [] and world.pending() == 60

    restarted = world.monitor()
    world.add(*(entry(i) for i in range(60, 230)))
    assert (await restarted.tick()).entries == 230  # each pending entry read once, then the new ones
    assert [r.n_rows for r in world.reports()] == [100, 100]
    assert world.entries("monitored") == 230.0 and world.index_rows() == 230
    assert world.pending() == 30  # the open window's, until its report is stored
    world.add(*(entry(i) for i in range(230, 300)))
    await restarted.tick()
    assert [r.n_rows for r in world.reports()] == [100, 100, 100] and world.pending() == 0


async def test_entries_a_time_window_counts_are_acknowledged_with_its_report(world: World) -> None:
    register_reference(world)
    configure(world.sessions, window_kind=pb.WINDOW_KIND_TIME, window_seconds=60)
    second = 1_000_000
    world.add(entry(0, ts_us=T0 + second), entry(1, ts_us=T0 + 61 * second), entry(2, ts_us=T0 + 2 * second))
    monitor = world.monitor()
    await monitor.tick()
    # The first minute is reported: entry 0 acknowledged. Entry 2 came late for it, and its count rides
    # with the open minute, as entry 1's row does.
    assert [r.n_rows for r in world.reports()] == [1] and world.pending() == 2
    world.now = T0 / 1e6 + 200  # the open minute is flushed by the clock
    await monitor.tick()
    last = max(world.reports(), key=lambda r: r.window_end_us)
    assert (last.n_rows, last.late_rows) == (1, 1) and world.pending() == 0


# ---------------------------------------------------------------------------- an undecodable entry


async def test_a_poison_entry_is_counted_malformed_and_the_good_ones_go_through_across_restarts(
    world: World,
) -> None:
    configure(world.sessions, window_rows=6)
    world.add(entry(0), entry(1), entry(2), poison(99), entry(3), entry(4), entry(5))
    # A monitor that read the batch and stopped before acknowledging it (the old crash on the poison):
    # the next one to start finds all seven pending, poison included.
    world.log.xgroup_create(STREAM, SETTINGS.group, id="0")
    world.log.xreadgroup(SETTINGS.group, SETTINGS.consumer, {STREAM: ">"})
    assert world.pending() == 7

    restarted = world.monitor()
    result = await restarted.tick()
    assert result.entries == 7 and world.pending() == 0
    assert world.indexed() == [f"r{i}" for i in range(6)]
    assert (world.entries("monitored"), world.entries("malformed")) == (6.0, 1.0)
    (report,) = world.reports()
    assert report.n_rows == 6  # the six good rows, each once, in one count window
    assert (await restarted.tick()).entries == 0

    # New traffic, poison again, another restart: the monitor keeps going.
    world.add(entry(6), poison(98), entry(7), entry(8))
    again = world.monitor()
    assert (await again.tick()).entries == 4
    assert world.indexed() == [f"r{i}" for i in range(9)]
    assert (world.entries("monitored"), world.entries("malformed")) == (3.0, 1.0)
    assert world.pending() == 3  # the poison acknowledged; the rows of the open window kept pending


async def test_an_entry_whose_rows_the_database_refuses_is_malformed_and_the_batch_indexed(
    world: World, engine: Engine
) -> None:
    # Text holding NUL is refused (PostgreSQL cannot store it, and the engine refuses it on both backends
    # alike): the index write of the whole batch failed, on every retry.
    world.add(entry(0), entry(1, request_id="nul\x00id"), entry(2))
    monitor = world.monitor()
    assert (await monitor.tick()).entries == 3 and world.pending() == 2  # r0, r2: in the open window
    assert world.indexed() == ["r0", "r2"]
    assert (world.entries("monitored"), world.entries("malformed")) == (2.0, 1.0)


# ---------------------------------------------------------------------------- a tick failing part-way


@pytest.fixture
def locked_sqlite(tmp_path: Path) -> Iterator[tuple[sessionmaker[Session], Callable[[], sqlite3.Connection]]]:
    """A SQLite database that gives up on a lock after 0.2 s, and a way to hold its write lock from
    another connection (as another process would)."""
    path = tmp_path / "locked.db"
    engine = create_db_engine(f"sqlite:///{path}", busy_timeout_s=0.2)
    upgrade_to_head(engine)
    holders: list[sqlite3.Connection] = []

    def hold_write_lock() -> sqlite3.Connection:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        holders.append(holder)
        return holder

    yield create_session_factory(engine), hold_write_lock
    for holder in holders:
        holder.close()
    engine.dispose()


async def test_a_batch_failing_on_a_locked_database_is_processed_exactly_once_after(
    locked_sqlite: tuple[sessionmaker[Session], Callable[[], sqlite3.Connection]],
    store: ArtifactStore,
    redis_url: str,
) -> None:
    sessions, hold_write_lock = locked_sqlite
    here = World(sessions, store, redis_url)
    try:
        configure(sessions, window_rows=4)
        here.add(*(entry(i) for i in range(4)))
        monitor = here.monitor()
        holder = hold_write_lock()
        await tick_failing(monitor, sqlalchemy.exc.OperationalError)  # database is locked
        assert here.index_rows() == 0 and here.pending() == 4
        holder.rollback()

        result = await monitor.tick()
        assert result.entries == 4 and here.pending() == 0
        assert here.indexed() == ["r0", "r1", "r2", "r3"]
        assert here.entries("monitored") == 4.0
        (report,) = here.reports()
        assert report.n_rows == 4 and [r.id for r in result.reports] == [report.id]
        assert (await monitor.tick()).entries == 0 and len(here.reports()) == 1
    finally:
        await here.close()


async def test_a_window_closing_while_the_database_is_locked_is_reported_once_it_is_free(
    locked_sqlite: tuple[sessionmaker[Session], Callable[[], sqlite3.Connection]],
    store: ArtifactStore,
    redis_url: str,
) -> None:
    sessions, hold_write_lock = locked_sqlite
    here = World(sessions, store, redis_url)
    try:
        configure(sessions, window_kind=pb.WINDOW_KIND_TIME, window_seconds=60)
        here.add(*(entry(i) for i in range(5)))
        monitor = here.monitor()
        assert (await monitor.tick()).entries == 5 and not here.reports()  # the window is still open
        holder = hold_write_lock()
        here.now += 120  # the window is due: it closes at the next tick, whose report cannot be stored
        await tick_failing(monitor, sqlalchemy.exc.OperationalError)
        holder.rollback()
        result = await monitor.tick()
        (report,) = here.reports()
        assert report.n_rows == 5 and [r.id for r in result.reports] == [report.id]
        assert here.windows("reported") == 1.0 and here.windows("dropped") == 0.0
    finally:
        await here.close()


async def test_a_batch_whose_report_fails_is_re_read_and_counted_once(world: World) -> None:
    sha = register_reference(world)
    configure(world.sessions, window_rows=4)
    world.add(*(entry(i) for i in range(4)))
    monitor = world.monitor()
    profile = Path(world.store.location(sha))
    held = take_file(profile)  # the reference profile cannot be read for a while
    # The batch is indexed and its window closed, but the report fails: nothing is acknowledged.
    await tick_failing(monitor, Exception)
    assert world.index_rows() == 4 and world.pending() == 4
    put_file(profile, held)
    # The queued window is reported, which acknowledges its entries: nothing is left to read again.
    result = await monitor.tick()
    assert result.entries == 0 and world.pending() == 0
    (report,) = world.reports()
    assert report.n_rows == 4 and report.status != pb.DRIFT_STATUS_NO_REFERENCE
    assert world.entries("monitored") == 4.0 and world.index_rows() == 4
    world.add(*(entry(i) for i in range(4, 8)))  # the next window starts empty: nothing counted twice
    assert (await monitor.tick()).entries == 4
    assert [r.n_rows for r in world.reports()] == [4, 4]


async def test_a_window_whose_report_keeps_failing_is_dropped_and_the_monitor_goes_on(world: World) -> None:
    sha = register_reference(world)
    configure(world.sessions, window_rows=2)
    world.add(entry(0), entry(1))
    profile = Path(world.store.location(sha))
    held = take_file(profile, b"not a profile any more")
    monitor = world.monitor()
    for _ in range(MAX_REPORT_ATTEMPTS - 1):
        await tick_failing(monitor, Exception)
    await monitor.tick()  # the last attempt fails too: the window is dropped, counted, logged
    assert world.windows("dropped") == 1.0 and world.reports() == [] and world.pending() == 0
    assert world.entries("monitored") == 2.0 and world.index_rows() == 2
    put_file(profile, held)  # repaired: the windows behind the dropped one are reported
    world.add(entry(2), entry(3))
    assert (await monitor.tick()).entries == 2 and world.index_rows() == 4
    assert [r.n_rows for r in world.reports()] == [2] and world.windows("reported") == 1.0


async def test_a_stored_config_with_an_undefined_enum_value_is_refused_once_not_window_by_window(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # As ConfigureMonitor stored it before its enum fields were checked (the one way left to get it).
    # Each window then failed on correction 999 and was dropped after MAX_REPORT_ATTEMPTS ticks, each of
    # them failed (holding up every other deployment's windows), with one error per window.
    register_reference(world)
    stored = json_format.MessageToDict(
        effective(pb.MonitorConfig(deployment="churn", window_rows=2)), preserving_proto_field_name=True
    )
    stored["correction"] = 999
    with write_session(world.sessions) as session:
        session.add(
            MonitorConfigRow(
                deployment="churn",
                config=stored,
                updated_by="test",
                updated_at_us=time.time_ns() // 1000,  # logged once per stored version and process
            )
        )
    world.add(*(entry(i) for i in range(6)))
    monitor = world.monitor()
    with caplog.at_level(logging.ERROR, logger="control_plane.monitoring.config"):
        for _ in range(MAX_REPORT_ATTEMPTS + 1):
            await monitor.tick()  # none fails
    refusals = [r.getMessage() for r in caplog.records if r.name == "control_plane.monitoring.config"]
    assert len(refusals) == 1 and "deployment 'churn'" in refusals[0] and "correction 999" in refusals[0]
    assert world.windows("dropped") == 0.0 and world.reports() == []
    assert world.index_rows() == 6 and world.pending() == 0  # indexed for the label join, acknowledged
    with pytest.raises(FailedPrecondition, match=r"deployment 'churn' cannot be used: correction 999"):
        get_config(world.sessions, "churn")
    configure(world.sessions, window_rows=2)  # replaced: monitored again
    world.add(entry(6), entry(7))
    await monitor.tick()
    assert [r.n_rows for r in world.reports()] == [2] and world.windows("dropped") == 0.0


async def test_the_monitor_recovers_from_a_redis_restart_that_lost_its_group(
    sessions: sessionmaker[Session], store: ArtifactStore
) -> None:
    server = RedisServer()
    server.start()
    here = World(sessions, store, server.url)
    try:
        here.add(entry(0))
        monitor = here.monitor()
        assert (await monitor.tick()).entries == 1
        server.stop()
        await tick_failing(monitor, redis.exceptions.ConnectionError)
        server.start()  # empty: no stream, no consumer group
        here.add(entry(1), entry(2))
        for _ in range(3):  # the pool may hand out a dead connection once more
            try:
                if (await monitor.tick()).entries:
                    break
            except redis.exceptions.ConnectionError:
                await asyncio.sleep(0.05)
        assert here.indexed() == ["r0", "r1", "r2"] and here.pending() == 2  # r1, r2: the open window
    finally:
        await here.close()
        server.close()


# ---------------------------------------------------------------------------- quality alerts


async def test_a_deployment_whose_quality_windows_cannot_be_computed_does_not_stop_the_others_alerting(
    world: World,
) -> None:
    # Stored before window widths were bounded: 1e-7 s rounds to a window of 0 µs. Checked first, it
    # failed the whole check every interval, so no deployment after it ever alerted.
    with write_session(world.sessions) as session:
        session.add(
            MonitorConfigRow(
                deployment="aaa",
                config={
                    "deployment": "aaa",
                    "task": "TASK_TYPE_CLASSIFICATION",
                    "performance_window_seconds": 1e-7,
                },
                updated_by="test",
                updated_at_us=T0,
            )
        )
    put_config(
        world.sessions,
        pb.MonitorConfig(
            deployment="zzz", task=pb.TASK_TYPE_CLASSIFICATION, alert_threshold=0.9, min_labels=10
        ),
        actor="test",
    )
    hour = 3600 * 1_000_000
    start = (T0 // hour - 3) * hour  # a complete window, well before now
    index_predictions(
        world.sessions,
        [IndexedPrediction(f"q{i}", 0, "zzz", "m", 1, "primary", start + i, [1.0], True) for i in range(20)],
    )
    record_feedback(world.sessions, [pb.Feedback(request_id=f"q{i}", label=i % 2) for i in range(20)])
    (window,) = await world.monitor().check_performance()  # accuracy 0.5 < 0.9
    assert window.start_us == start and window.status == pb.PERFORMANCE_STATUS_DEGRADED


async def test_the_quality_check_alerts_a_degraded_sliding_window(world: World) -> None:
    # 1 h every 1 s was accepted and made the check fail on every pass (only logged: no alert ever); the
    # narrowest step accepted for 1 h (3.6 s) must alert, over the most recent windows one read holds.
    config = pb.MonitorConfig(
        deployment="zzz",
        task=pb.TASK_TYPE_CLASSIFICATION,
        alert_threshold=0.9,
        min_labels=10,
        performance_window_seconds=3600,
        performance_step_seconds=1,
    )
    with pytest.raises(InvalidArgument, match="at most 1000 performance_step_seconds"):
        put_config(world.sessions, config, actor="test")
    config.performance_step_seconds = 3.6
    put_config(world.sessions, config, actor="test")
    start = T0 - 3600 * 1_000_000  # labelled an hour before now: within the ~1 h 55 min one read covers
    predicted(world.sessions, "q", start, 1.0, [i % 2 for i in range(20)])
    monitor = world.monitor()
    alerted = await monitor.check_performance()  # accuracy 0.5 < 0.9 in every complete window holding them
    assert alerted and all(w.status == pb.PERFORMANCE_STATUS_DEGRADED for w in alerted)
    assert all(w.start_us <= start and start + 19 < w.end_us <= T0 for w in alerted)
    assert len(alerted) >= 999  # every window holding them: 1 h / 3.6 s, all ended by now
    assert await monitor.check_performance() == []  # claimed: each alerts once


async def test_labels_a_version_without_classes_cannot_be_mapped_to_are_logged_not_alerted(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # One score, labels 1 and 2, and no classes registered for m v1: label 2 was read as "the other class,
    # 0", so its rows were always wrong, and the window alerted DEGRADED on a number that was not.
    classify(world.sessions, alert_threshold=0.9)
    start = COMPLETE_WINDOW_START_US
    scores = [
        IndexedPrediction(f"q{i}", 0, "zzz", "m", 1, "primary", start + i, [0.9], False) for i in range(20)
    ]
    index_predictions(world.sessions, scores)
    record_feedback(world.sessions, [pb.Feedback(request_id=f"q{i}", label=1 + i % 2) for i in range(20)])
    monitor = world.monitor()
    with caplog.at_level(logging.WARNING, logger="aether.control_plane.monitoring"):
        assert await monitor.check_performance() == []
        assert await monitor.check_performance() == []
    (warning,) = [r.getMessage() for r in caplog.records if "lists no classes" in r.getMessage()]
    assert "deployment 'zzz'" in warning and "m v1" in warning  # once per version and process


async def test_a_model_answering_nan_on_every_labelled_row_alerts_once(world: World) -> None:
    # Every labelled prediction NaN: the window is DEGRADED with no metric at all. The quality check kept
    # only windows with metrics, so the total failure never alerted while a model with a few valid rows did.
    classify(world.sessions, alert_threshold=0.9)
    predicted(world.sessions, "q", COMPLETE_WINDOW_START_US, math.nan, [i % 2 for i in range(20)])
    monitor = world.monitor()
    (window,) = await monitor.check_performance()
    assert window.start_us == COMPLETE_WINDOW_START_US and window.status == pb.PERFORMANCE_STATUS_DEGRADED
    assert not window.metrics and window.n_invalid_predictions == 20
    assert await monitor.check_performance() == []  # claimed: it alerts once


async def test_a_hung_redis_is_logged_as_an_outage_not_as_a_bug(
    sessions: sessionmaker[Session], store: ArtifactStore, caplog: pytest.LogCaptureFixture
) -> None:
    # redis-py's reply timeout (a Redis that accepts connections and never answers, now that the control
    # plane's clients time out) is no ConnectionError: the loop logged it as an ERROR with a traceback.
    server = RedisServer()
    server.start()
    assert server.process is not None
    client = redis.asyncio.Redis.from_url(server.url, socket_timeout=0.2, socket_connect_timeout=0.2)
    monitor = Monitor(sessions, ReferenceCache(sessions, store, ttl_s=0.0), client, SETTINGS)
    caplog.set_level(logging.WARNING, "aether.control_plane.monitoring")
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        monitor.start()
        deadline = time.monotonic() + 10
        while not any("monitor tick failed" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "no tick failed against the hung Redis"
            await asyncio.sleep(0.05)
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
        await monitor.stop()
        server.close()
    failed = [r for r in caplog.records if "monitor tick failed" in r.getMessage()]
    assert [(r.levelno, bool(r.exc_info)) for r in failed] == [(logging.WARNING, False)]  # no traceback
    assert "Timeout" in failed[0].getMessage()
