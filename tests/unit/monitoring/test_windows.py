"""Tumbling windows by count and by time."""

from __future__ import annotations

import numpy as np
import pytest

from control_plane.monitoring.windows import Batch, TumblingWindows


def rows(n: int, start: float = 0.0, width: int = 2) -> np.ndarray:
    return np.arange(start, start + n * width, dtype=np.float64).reshape(n, width)


def test_count_windows_hold_exactly_n_rows_and_split_a_request_across_the_boundary() -> None:
    windows = TumblingWindows("count", rows=5)
    assert windows.add(Batch(10, rows(3))) == []
    closed = windows.add(Batch(20, rows(4, start=100), outputs=np.ones((4, 1))))
    assert len(closed) == 1
    first = closed[0]
    assert first.n_rows == 5 and (first.start_us, first.end_us) == (10, 20)
    np.testing.assert_array_equal(first.features[3:], rows(2, start=100))
    assert first.outputs is not None and first.outputs.shape == (2, 1)  # only the rows that had outputs
    assert windows.pending_rows == 2
    closed = windows.add(Batch(30, rows(13)))
    assert [w.n_rows for w in closed] == [5, 5, 5] and windows.pending_rows == 0


def test_time_windows_are_aligned_periods_closed_by_later_rows_or_by_the_clock() -> None:
    windows = TumblingWindows("time", seconds=1.0, grace_s=0.5)
    assert windows.add(Batch(1_200_000, rows(2))) == []
    assert windows.add(Batch(1_900_000, rows(1))) == []
    closed = windows.add(Batch(2_100_000, rows(4)))
    assert len(closed) == 1 and closed[0].n_rows == 3
    assert (closed[0].start_us, closed[0].end_us) == (1_000_000, 2_000_000)
    assert windows.add(Batch(1_500_000, rows(2))) == [] and windows.late_rows == 2  # its window closed
    assert windows.flush_due(3_400_000) == []  # within the grace period
    flushed = windows.flush_due(3_500_000)
    assert len(flushed) == 1 and flushed[0].n_rows == 4 and flushed[0].start_us == 2_000_000
    assert windows.add(Batch(2_200_000, rows(1))) == [] and windows.late_rows == 3


def test_rows_with_another_feature_count_are_counted_and_dropped() -> None:
    windows = TumblingWindows("count", rows=4)
    windows.add(Batch(1, rows(2)))
    assert windows.add(Batch(2, rows(2, width=3))) == []
    assert windows.mismatched_rows == 2
    assert [w.n_rows for w in windows.add(Batch(3, rows(2)))] == [4]


def test_one_malformed_first_row_does_not_make_every_later_row_mismatched() -> None:
    windows = TumblingWindows("count", rows=4)
    windows.add(Batch(1, rows(1, width=5)))  # one stray row of another width first
    closed = [w for i in range(20) for w in windows.add(Batch(2 + i, rows(1, width=3)))]
    # The second good entry outnumbers the stray one: the stray and the first good row are dropped, and
    # every later window fills with good rows.
    assert windows.mismatched_rows == 2
    assert [w.features.shape for w in closed] == [(4, 3)] * 4 and closed[0].mismatched_rows == 2
    assert windows.pending_rows == 3


def test_a_time_window_takes_the_width_of_its_own_first_row() -> None:
    windows = TumblingWindows("time", seconds=1.0)
    windows.add(Batch(1_100_000, rows(1, width=5)))
    assert windows.add(Batch(1_200_000, rows(2, width=3))) == [] and windows.mismatched_rows == 2
    (first,) = windows.add(Batch(2_100_000, rows(2, width=3)))  # a later period: a window of its own
    assert first.features.shape == (1, 5) and first.mismatched_rows == 2
    windows.add(Batch(2_200_000, rows(1, width=3)))
    assert windows.pending_rows == 3 and windows.mismatched_rows == 2


def test_the_reference_width_once_known_decides_what_is_mismatched() -> None:
    windows = TumblingWindows("count", rows=2, width=3)
    assert windows.width == 3
    windows.add(Batch(1, rows(1, width=5)))  # of another width than the reference: never opens a window
    assert windows.mismatched_rows == 1 and windows.pending_rows == 0
    (window,) = windows.add(Batch(2, rows(2, width=3)))
    assert window.mismatched_rows == 1
    learning = TumblingWindows("count", rows=2)
    learning.add(Batch(1, rows(1, width=5)))
    learning.expect_width(3)  # the open window's row of another width is the stray
    assert learning.mismatched_rows == 1 and learning.pending_rows == 0
    assert learning.add(Batch(2, rows(1, width=3))) == [] and learning.pending_rows == 1
    learning.add(Batch(3, rows(1, width=5)))
    assert learning.mismatched_rows == 2
    (window,) = learning.add(Batch(4, rows(1, width=3)))
    assert window.features.shape == (2, 3) and window.mismatched_rows == 2
    adopted = TumblingWindows("count", rows=5)
    adopted.adopt(learning)
    assert adopted.width == 3


def test_invalid_window_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        TumblingWindows("count", rows=0)
    with pytest.raises(ValueError):
        TumblingWindows("time", seconds=0)


def test_the_open_window_hands_over_its_rows_as_added() -> None:
    windows = TumblingWindows("count", rows=10)
    windows.add(Batch(1, rows(3)))
    windows.add(Batch(2, rows(2), outputs=np.ones((2, 1))))
    pending = windows.pending()
    assert [(b.ts_us, b.n_rows) for b in pending] == [(1, 3), (2, 2)] and pending[1].outputs is not None
    smaller = TumblingWindows("count", rows=4)
    closed = [w for batch in pending for w in smaller.add(batch)]
    assert [w.n_rows for w in closed] == [4] and smaller.pending_rows == 1


def test_dropped_rows_are_reported_as_dropped_and_carried_by_the_next_window() -> None:
    dropped: list[tuple[str, int]] = []
    windows = TumblingWindows("time", seconds=1.0, on_drop=lambda reason, n: dropped.append((reason, n)))
    windows.add(Batch(1_100_000, rows(2)))
    (first,) = windows.add(Batch(2_100_000, rows(1)))
    assert (first.late_rows, first.mismatched_rows) == (0, 0)
    windows.add(Batch(1_500_000, rows(3)))  # late: its window closed
    windows.add(Batch(2_200_000, rows(2, width=3)))  # another feature count
    assert dropped == [("late", 3), ("mismatched", 2)]
    # Re-configured before it closes: the new windows take over the open rows and the dropped counts.
    reshaped = TumblingWindows("count", rows=10)
    assert reshaped.adopt(windows) == []
    reshaped.add(Batch(2_300_000, rows(1, width=3)))  # mismatched in the new windows too
    (window,) = reshaped.add(Batch(2_400_000, rows(9)))
    assert (window.n_rows, window.late_rows, window.mismatched_rows) == (10, 3, 3)
    (after,) = reshaped.add(Batch(2_500_000, rows(10)))
    assert (after.late_rows, after.mismatched_rows) == (0, 0)


def test_a_count_window_spans_its_rows_times_whatever_order_they_were_logged_in() -> None:
    # Rows reach the log in arrival order, not prediction-time order: a slow request logs after a faster
    # one that started later, and replicas' clocks differ. Bounded by its first and last rows, such a
    # window ended before it started (or before rows it holds), and the retraining loop, which counts a
    # window only when it ends after the last trigger, could judge it stale.
    windows = TumblingWindows("count", rows=3)
    assert windows.add(Batch(2_000_000, rows(1))) == []
    assert windows.add(Batch(5_000_000, rows(1))) == []
    closed = windows.add(Batch(1_000_000, rows(1)))
    assert len(closed) == 1 and (closed[0].start_us, closed[0].end_us) == (1_000_000, 5_000_000)
    assert windows.add(Batch(9_000_000, rows(2))) == []
    stopped = windows.close_open()
    assert len(stopped) == 1 and (stopped[0].start_us, stopped[0].end_us) == (9_000_000, 9_000_000)


@pytest.mark.parametrize("seconds", [1.0, 2.0, 0.5])
def test_rows_of_a_time_window_already_reported_stay_late_in_reconfigured_windows(seconds: float) -> None:
    # A config change (any window setting, even window_rows of time windows) cuts new windows that adopt
    # the open one. They knew nothing of the windows already closed: a late row of one was taken, and its
    # period reported a second time.
    windows = TumblingWindows("time", seconds=1.0)
    windows.add(Batch(1_100_000, rows(2)))
    (first,) = windows.flush_due(2_000_000)
    assert (first.start_us, first.end_us) == (1_000_000, 2_000_000)
    reshaped = TumblingWindows("time", seconds=seconds)
    assert reshaped.adopt(windows) == []
    assert reshaped.add(Batch(1_500_000, rows(3))) == [] and reshaped.late_rows == 3
    assert reshaped.pending_rows == 0
    reshaped.add(Batch(2_100_000, rows(1)))
    (window,) = reshaped.flush_due(10_000_000)
    assert window.n_rows == 1 and window.late_rows == 3 and window.start_us < 2_100_000 < window.end_us


def test_a_request_of_the_strays_width_after_the_versions_is_known_is_mismatched_whole() -> None:
    # Before, the open window kept the stray's width and a request of that width filling it spilled its
    # last rows into the next window, which expects the version's width. Mixed widths there failed every
    # later close (numpy could not stack them), and the full window never emptied: every later entry of
    # the version was refused, and it got no drift report again.
    windows = TumblingWindows("count", rows=2)
    windows.add(Batch(1, rows(1, width=3)))
    windows.expect_width(2)
    assert windows.add(Batch(2, rows(2, width=3))) == []
    assert windows.mismatched_rows == 3 and windows.pending_rows == 0
    (window,) = windows.add(Batch(3, rows(2, width=2)))
    assert window.features.shape == (2, 2) and window.mismatched_rows == 3
    (after,) = windows.add(Batch(4, rows(2, width=2)))
    assert after.features.shape == (2, 2)


def test_a_stray_first_row_does_not_hold_the_window_once_the_versions_width_is_known() -> None:
    # A stray entry of another feature count opened the window before the version's reference was read
    # (registered later, or unreadable at first). Learning the version's count, the open window kept the
    # stray's, so every good row after it was dropped as mismatched and the window never filled: the
    # version got no drift report again, unless another stray of that count came along.
    windows = TumblingWindows("count", rows=2)
    windows.add(Batch(1, rows(1, width=5)))
    windows.expect_width(3)
    assert windows.mismatched_rows == 1 and windows.pending_rows == 0
    (window,) = windows.add(Batch(2, rows(2, width=3)))
    assert window.features.shape == (2, 3) and window.mismatched_rows == 1
    timed = TumblingWindows("time", seconds=1.0)
    timed.add(Batch(1_100_000, rows(1, width=5)))
    timed.expect_width(3)
    timed.add(Batch(1_200_000, rows(2, width=3)))
    (window,) = timed.flush_due(2_000_000)
    assert window.features.shape == (2, 3) and window.mismatched_rows == 1
