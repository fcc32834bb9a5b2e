"""The tracking benchmark's logging figure counts the points the server confirmed; a run that lost
points is a failed run, never a throughput over points that were not stored."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import tracking


def test_points_per_s_counts_what_was_shipped() -> None:
    figures = tracking.shipped_rate(1_000, 1_000, 0, True, 0.5)
    assert figures["points"] == 1_000 and figures["points_per_s"] == 2_000.0


@pytest.mark.parametrize(
    ("shipped", "dropped", "flushed", "message"),
    [
        (900, 100, True, "1,000 points logged, 900 shipped, 100 dropped"),
        (400, 0, False, "400 shipped, 0 dropped, flush timed out"),
        (999, 0, True, "999 shipped"),
    ],
)
def test_lost_points_fail_the_run(shipped: int, dropped: int, flushed: bool, message: str) -> None:
    with pytest.raises(tracking.PointsLost, match=message):
        tracking.shipped_rate(1_000, shipped, dropped, flushed, 0.5)


@pytest.mark.integration
def test_logging_against_a_real_control_plane(tmp_path: Path) -> None:
    with tracking.control_plane(tmp_path) as address:
        figures = tracking.aether_logging(address, 2, wait_on_close=True)
    assert figures["points"] == figures["shipped_points"] == 2 * tracking.KEYS * tracking.STEPS
    assert figures["dropped_points"] == 0
    assert figures["points_per_s"] == figures["points"] / figures["seconds"]
