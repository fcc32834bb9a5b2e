"""Two predictions logged under one request id: the first keeps the label, the second is counted and
logged as a duplicate request id, and a re-read of the same entry is not (real redis-server stream, real
database)."""

from __future__ import annotations

import logging

import pytest

from tests.unit.monitoring.world import World, entry


def duplicates(world: World) -> float:
    labels = {"deployment": "churn"}
    return world.registry.get_sample_value("aether_monitor_duplicate_request_ids_total", labels) or 0.0


async def test_a_second_prediction_under_a_request_id_is_counted_and_logged_once(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = world.monitor()
    world.add(entry(0, request_id="reused"), entry(1, request_id="reused"), entry(2))
    with caplog.at_level(logging.WARNING, logger="aether.control_plane.monitoring"):
        await monitor.tick()
        world.add(entry(3, request_id="reused"))
        await monitor.tick()
    # Skipped by the index's insert without a word before: nothing said the label judged another answer.
    assert duplicates(world) == 2
    assert caplog.text.count("duplicate request id") == 1  # said once per deployment
    assert world.indexed() == ["r2", "reused"]
    assert world.entries("monitored") == 4  # the entries themselves are monitored (drift windows)

    # A restart re-reads the pending entries (the open window holds them): the first prediction's own
    # entry is no duplicate; the two later ones count again (at least once across a restart).
    assert world.pending() == 4
    again = world.monitor()
    await again.tick()
    assert world.indexed() == ["r2", "reused"]
    assert duplicates(world) == 2
