"""The retraining loop's performance look-back fits in one monitor query, however short the windows."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from clients.aether.v1 import monitoring_pb2 as mpb
from control_plane.monitoring.performance import window_starts
from control_plane.retraining.observe import LOOKBACK_US, performance_lookback_us

NOW_US = 1_800_000_000_000_000


@given(width_s=st.floats(0.5, 7 * 86_400), step_fraction=st.floats(0.01, 1.0))
def test_lookback_never_spans_more_windows_than_a_query_may(width_s: float, step_fraction: float) -> None:
    monitor = mpb.MonitorConfig(
        performance_window_seconds=width_s, performance_step_seconds=max(0.5, width_s * step_fraction)
    )
    lookback = performance_lookback_us(monitor)
    # at least one step back (a step may be longer than two days), never more than two days otherwise
    assert 0 < lookback <= max(LOOKBACK_US, round(monitor.performance_step_seconds * 1e6))
    starts = window_starts(
        NOW_US - lookback,
        NOW_US,
        round(monitor.performance_window_seconds * 1e6),
        round(monitor.performance_step_seconds * 1e6),
    )  # raises InvalidArgument past the monitor's limit
    assert starts


def test_long_windows_look_back_two_days() -> None:
    monitor = mpb.MonitorConfig(performance_window_seconds=3600, performance_step_seconds=600)
    assert performance_lookback_us(monitor) == LOOKBACK_US


def test_short_windows_look_back_less() -> None:
    monitor = mpb.MonitorConfig(performance_window_seconds=10, performance_step_seconds=5)
    assert performance_lookback_us(monitor) < 2000 * 5 * 1_000_000
