"""What the monitor keeps and loses stays bounded and counted, on a real redis-server and database:
entries the data plane's cap trimmed from the log before the monitor read them are counted and logged;
the open window of a version that stopped serving is reported and its entries acknowledged; quality checks
and pruning keep their beat when the wall clock is stepped back."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

import pytest

from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.monitoring.feedback import IndexedPrediction, index_predictions, record_feedback
from control_plane.monitoring.gauges import gauges_for
from control_plane.monitoring.monitor import Monitor
from control_plane.monitoring.profiles import ReferenceCache
from control_plane.monitoring.stream import trimmed_unread
from tests.unit.monitoring.world import SETTINGS, STREAM, T0, World, configure, entry


def log_capped(world: World, first: int, count: int, cap: int) -> None:
    """Logs entries ``first`` … ``first + count - 1`` as the data plane does, its stream capped at ``cap``
    (exactly, where the data plane's ``MAXLEN ~`` trims whole nodes: the same gap, a round number)."""
    for i in range(first, first + count):
        world.log.xadd(STREAM, entry(i), maxlen=cap, approximate=False)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- entries trimmed unread


async def test_entries_trimmed_from_the_log_before_the_monitor_read_them_are_counted_and_logged(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The monitor read what was left after the trim and said nothing about the rest (5000 logged with
    a cap of 1000: 1004 read, 3996 in no counter and no log line)."""
    monitor = world.monitor()
    await monitor.tick()  # the consumer group exists, caught up
    log_capped(world, 0, 50, cap=10)  # the monitor is stopped or behind meanwhile
    with caplog.at_level(logging.WARNING, logger="aether.control_plane.monitoring"):
        assert (await monitor.tick()).entries == 10
    assert world.entries("trimmed") == 40.0 and world.entries("monitored") == 10.0
    assert "trimmed past 40 entries the monitor had not read" in caplog.text
    # A second gap counts its own entries only (Redis 7.0 counts a group's reads by entries delivered,
    # which would count the first gap again).
    log_capped(world, 50, 30, cap=10)
    assert (await monitor.tick()).entries == 10 and world.entries("trimmed") == 60.0
    # Nothing trimmed past the monitor: nothing counted, however far the stream was trimmed before.
    log_capped(world, 80, 5, cap=10)
    assert (await monitor.tick()).entries == 5 and world.entries("trimmed") == 60.0
    # Restarted, it reads its pending entries again (those trimmed since come back empty: skipped), then
    # finds no gap.
    restarted = world.monitor()
    assert (await restarted.tick()).entries == 25 and world.entries("trimmed") == 0.0


async def test_a_monitor_that_keeps_up_with_a_capped_log_counts_nothing_trimmed(world: World) -> None:
    monitor = world.monitor()
    for first in range(0, 60, 6):
        log_capped(world, first, 6, cap=10)
        assert (await monitor.tick()).entries == 6
    assert world.entries("trimmed") == 0.0 and world.entries("monitored") == 60.0


async def test_what_the_stream_cannot_tell_is_not_counted_as_a_number(world: World) -> None:
    """Redis before 7 has no ``entries-added``: no gap can be seen. Entries deleted inside the stream
    (``XDEL``) make the count unknown (None): logged, not counted."""
    log_capped(world, 0, 20, cap=10)
    info = dict(world.log.xinfo_stream(STREAM))
    group = {"name": b"g", "last-delivered-id": b"0-0", "entries-read": None}
    assert trimmed_unread(info, group) == 10
    before_7 = {key: value for key, value in info.items() if key != "entries-added"}
    assert trimmed_unread(before_7, group) == 0
    first, _ = info["first-entry"]
    world.log.xdel(STREAM, world.log.xrange(STREAM, count=2)[1][0])
    assert trimmed_unread(dict(world.log.xinfo_stream(STREAM)), group) is None
    caught_up = {"name": b"g", "last-delivered-id": first, "entries-read": 11}
    assert trimmed_unread(info, caught_up) == 0


# ---------------------------------------------------------------------------- versions that stop serving


class Monotonic:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def idling_monitor(world: World, monotonic: Monotonic) -> Monitor:
    """A monitor that forgets a version idle for 600 s on ``monotonic``."""
    return Monitor(
        world.sessions,
        ReferenceCache(world.sessions, world.store, ttl_s=0.0),
        world.client(),
        dataclasses.replace(SETTINGS, window_idle_s=600.0),
        gauges=gauges_for(world.registry),
        clock=lambda: world.now,
        monotonic=monotonic,
    )


def served_by(version: int, i: int) -> dict[bytes, bytes]:
    fields = entry(i)
    fields[b"version"] = str(version).encode()
    return fields


async def test_the_open_count_window_of_a_version_that_stopped_serving_is_reported_once_idle(
    world: World,
) -> None:
    """Each retired version kept up to window_rows - 1 rows in memory and their entries pending for good
    (20 versions of 300 requests: 6000 pending), in no report and no dropped count."""
    configure(world.sessions, window_rows=100)
    monotonic = Monotonic()
    monitor = idling_monitor(world, monotonic)
    world.add(*(served_by(1, i) for i in range(30)))
    await monitor.tick()
    monotonic.now += 400  # version 2 replaces version 1
    world.add(*(served_by(2, i) for i in range(30, 70)))
    await monitor.tick()
    assert world.reports() == [] and world.pending() == 70

    monotonic.now += 300  # version 1 idle for 700 s, version 2 for 300 s
    await monitor.tick()
    (retired,) = world.reports()
    assert (retired.version, retired.n_rows) == (1, 30)
    assert world.pending() == 40 and world.windows("reported") == 1.0  # version 2's open window
    await monitor.tick()  # nothing more to report of version 1: it is forgotten
    assert len(world.reports()) == 1 and world.pending() == 40

    monotonic.now += 600  # version 2 retired too
    await monitor.tick()
    assert sorted((r.version, r.n_rows) for r in world.reports()) == [(1, 30), (2, 40)]
    assert world.pending() == 0
    # A version that serves again starts a window afresh.
    world.add(*(served_by(1, i) for i in range(70, 170)))
    await monitor.tick()
    assert sorted((r.version, r.n_rows) for r in world.reports()) == [(1, 30), (1, 100), (2, 40)]
    assert world.pending() == 0 and world.entries("monitored") == 170.0


async def test_a_version_serving_on_keeps_its_count_window_open_however_long_it_takes(
    world: World,
) -> None:
    configure(world.sessions, window_rows=100)
    monotonic = Monotonic()
    monitor = idling_monitor(world, monotonic)
    for i in range(10):  # a row every 500 s: never idle for 600 s
        world.add(served_by(1, i))
        await monitor.tick()
        monotonic.now += 500
    assert world.reports() == [] and world.pending() == 10


async def test_an_idle_time_window_is_flushed_by_the_clock_and_its_version_forgotten(world: World) -> None:
    configure(world.sessions, window_kind=pb.WINDOW_KIND_TIME, window_seconds=60)
    monotonic = Monotonic()
    monitor = idling_monitor(world, monotonic)
    world.add(served_by(1, 0), served_by(1, 1))
    await monitor.tick()
    monotonic.now += 700
    world.now += 700  # the wall clock is past the minute, and the version idle: reported once
    await monitor.tick()
    await monitor.tick()
    assert [r.n_rows for r in world.reports()] == [2] and world.pending() == 0


# ---------------------------------------------------------------------------- the wall clock stepped back


class SteppedClock:
    """The wall clock as the host shows it, which NTP may step."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


async def eventually(check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not in time"
        await asyncio.sleep(0.02)


async def test_quality_checks_go_on_after_the_wall_clock_is_stepped_back(world: World) -> None:
    """Timed on the wall clock, no quality check (nor its alerts) ran after a step back until the clock
    caught up with the last check again: an hour's step, an hour of silence."""
    wall = SteppedClock()
    monitor = Monitor(
        world.sessions,
        ReferenceCache(world.sessions, world.store, ttl_s=0.0),
        world.client(),
        dataclasses.replace(SETTINGS, interval_s=0.01, performance_interval_s=0.05),
        gauges=gauges_for(world.registry),
        clock=wall,
    )

    def orphaned() -> float:
        return world.registry.get_sample_value("aether_feedback_orphaned") or 0.0

    record_feedback(world.sessions, [pb.Feedback(request_id="before", label=1)])
    monitor.start()
    try:
        await eventually(lambda: orphaned() == 1.0)  # the check runs, on its beat
        wall.offset = -3600.0
        record_feedback(world.sessions, [pb.Feedback(request_id="after", label=1)])
        await eventually(lambda: orphaned() == 2.0)  # and still does after the step
    finally:
        await monitor.stop()


async def test_pruning_goes_on_after_the_wall_clock_is_stepped_back(world: World) -> None:
    wall = SteppedClock()
    retention_s = 60.0
    monitor = Monitor(
        world.sessions,
        ReferenceCache(world.sessions, world.store, ttl_s=0.0),
        world.client(),
        dataclasses.replace(SETTINGS, interval_s=0.01, index_retention_s=retention_s, prune_interval_s=0.05),
        gauges=gauges_for(world.registry),
        clock=wall,
    )

    def index_before_retention(request_id: str) -> None:
        # Past the retention by the (stepped) clock, which dates the horizon: pruned on the next beat.
        ts_us = int((wall() - 2 * retention_s) * 1e6)
        row = IndexedPrediction(request_id, 0, "churn", "churn-model", 1, "primary", ts_us, [1.0], False)
        index_predictions(world.sessions, [row])

    monitor.start()
    try:
        index_before_retention("before")
        await eventually(lambda: world.index_rows() == 0)  # the prune runs, on its beat
        wall.offset = -3600.0
        index_before_retention("after")
        await eventually(lambda: world.index_rows() == 0)  # and still does after the step
    finally:
        await monitor.stop()


async def test_a_late_row_of_a_forgotten_version_does_not_report_its_period_again(world: World) -> None:
    # The version went idle: its minute was reported and the version forgotten, with the end of the
    # windows it had closed. A late row of that minute then opened it again in fresh windows, and the
    # clock closed it at once: a second report of the same period, of that one row.
    configure(world.sessions, window_kind=pb.WINDOW_KIND_TIME, window_seconds=60)
    monotonic = Monotonic()
    monitor = idling_monitor(world, monotonic)
    world.add(served_by(1, 0), served_by(1, 1))
    await monitor.tick()
    monotonic.now += 700
    world.now += 700
    await monitor.tick()
    await monitor.tick()  # forgotten
    assert [r.n_rows for r in world.reports()] == [2]

    world.add(served_by(1, 2))  # predicted in the minute reported
    await monitor.tick()
    assert [r.n_rows for r in world.reports()] == [2] and world.dropped("late") == 1
    monotonic.now += 700  # idle again: its dropped row, counted, no longer holds the entry
    await monitor.tick()
    await monitor.tick()  # which the next tick acknowledges
    assert [r.n_rows for r in world.reports()] == [2] and world.pending() == 0


async def test_a_version_quiet_for_a_while_inside_its_hour_gets_one_report_of_the_hour(world: World) -> None:
    # A time window is closed by the clock at its end. Closed early as "idle" too, the hour was reported
    # with the rows before the quiet spell, and the rows after it were either a second report of the same
    # hour or, once reported periods stayed closed, dropped as late for the rest of the hour.
    configure(world.sessions, window_kind=pb.WINDOW_KIND_TIME, window_seconds=3600)
    monotonic = Monotonic()
    monitor = idling_monitor(world, monotonic)
    world.add(served_by(1, 0), served_by(1, 1))  # T0 starts an hour
    await monitor.tick()
    monotonic.now += 700
    world.now += 700  # quiet for longer than window_idle_s, inside the hour
    await monitor.tick()
    world.add(entry(2, ts_us=T0 + 700_000_000))
    await monitor.tick()
    assert world.reports() == [] and world.dropped("late") == 0
    world.now += 3600  # the hour is over
    await monitor.tick()
    assert [r.n_rows for r in world.reports()] == [3] and world.pending() == 0


async def test_a_late_row_read_after_a_restart_does_not_report_a_stored_period_again(world: World) -> None:
    # The windows start empty after a restart: a late row of a minute reported before it opened that
    # minute again, and the clock closed it at once, a second report of the same period. The end of the
    # newest period stored for the version is read back when the version is first seen.
    configure(world.sessions, window_kind=pb.WINDOW_KIND_TIME, window_seconds=60)
    monitor = world.monitor()
    world.add(served_by(1, 0), served_by(1, 1))
    await monitor.tick()
    world.now += 120
    await monitor.tick()
    assert [r.n_rows for r in world.reports()] == [2] and world.pending() == 0

    restarted = world.monitor()
    world.add(served_by(1, 2))  # predicted in the minute reported
    await restarted.tick()
    await restarted.tick()
    assert [r.n_rows for r in world.reports()] == [2] and world.dropped("late") == 1
