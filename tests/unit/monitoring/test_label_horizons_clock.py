"""The monitor's prune dates the labels' horizons by the database's clock, which stamps the labels, on a
real redis-server and database (SQLite and PostgreSQL): a monitor whose host clock runs an hour ahead of
the database's deleted every orphaned label younger than that hour (with a shorter retention) as past
it, though its prediction could still be indexed. Prediction times (the data planes' clocks) are still
dated by the monitor's clock."""

from __future__ import annotations

import dataclasses
import time

from sqlalchemy import select, update

from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.db import read_session, write_session
from control_plane.db.clock import database_now_us
from control_plane.monitoring.feedback import orphaned_total, orphans_expired_total, record_feedback
from control_plane.monitoring.gauges import gauges_for
from control_plane.monitoring.monitor import Monitor
from control_plane.monitoring.profiles import ReferenceCache
from control_plane.monitoring.tables import FeedbackRow
from tests.unit.monitoring.world import SETTINGS, World

RETENTION_S = 1800.0


def an_hour_ahead() -> float:
    """The wall clock of the monitor's host: an hour ahead of the database's."""
    return time.time() + 3600.0


async def test_a_monitor_whose_clock_runs_ahead_keeps_the_orphans_younger_than_the_retention(
    world: World,
) -> None:
    monitor = Monitor(
        world.sessions,
        ReferenceCache(world.sessions, world.store, ttl_s=0.0),
        world.client(),
        dataclasses.replace(SETTINGS, index_retention_s=RETENTION_S, joined_label_retention_s=RETENTION_S),
        gauges=gauges_for(world.registry),
        clock=an_hour_ahead,
    )
    record_feedback(
        world.sessions, [pb.Feedback(request_id="fresh", label=1), pb.Feedback(request_id="old", label=1)]
    )
    with write_session(world.sessions) as session:  # recorded two retentions ago, by the database's clock
        old_us = database_now_us(session) - int(2 * RETENTION_S * 1e6)
        session.execute(
            update(FeedbackRow).where(FeedbackRow.request_id == "old").values(recorded_at_us=old_us)
        )
    await monitor.run_due()
    with read_session(world.sessions) as session:
        kept = sorted(session.execute(select(FeedbackRow.request_id)).scalars())
    assert (kept, orphaned_total(world.sessions), orphans_expired_total(world.sessions)) == (["fresh"], 1, 1)
