"""Tumbling windows under any sequence of requests (out of order in time, of stray feature counts), clock
flushes, idle closes, learnt feature counts and re-configurations: every row read is in exactly one window
or counted dropped once, a window never mixes feature counts, and its bounds are in order."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control_plane.monitoring.windows import Batch, DropReason, TumblingWindows, Window

KINDS = st.sampled_from(["count", "time"])
OPERATIONS = st.lists(
    st.one_of(
        # a request: its time (s), rows and feature count
        st.tuples(st.just("add"), st.integers(-5, 60), st.integers(1, 5), st.sampled_from([2, 2, 2, 3])),
        st.tuples(st.just("flush"), st.integers(-5, 80), st.just(0), st.just(0)),
        st.tuples(st.just("close"), st.just(0), st.just(0), st.just(0)),
        st.tuples(st.just("expect"), st.just(0), st.just(0), st.sampled_from([2, 3])),
        st.tuples(st.just("adopt"), KINDS, st.integers(1, 7), st.integers(1, 20)),
    ),
    max_size=40,
)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(KINDS, st.integers(1, 7), st.integers(1, 20), st.integers(0, 5), OPERATIONS)
def test_every_row_is_in_one_window_or_counted_dropped_once(
    kind: Any, rows: int, seconds: int, grace_s: int, operations: list[tuple[str, Any, int, int]]
) -> None:
    dropped = {"late": 0, "mismatched": 0}

    def on_drop(reason: DropReason, n: int) -> None:
        dropped[reason] += n

    windows = TumblingWindows(kind, rows=rows, seconds=seconds, grace_s=grace_s, on_drop=on_drop)
    added = in_windows = 0
    for operation, first, second, third in operations:
        closed: list[Window]
        if operation == "add":
            added += second
            closed = windows.add(Batch(first * 1_000_000, np.ones((second, third))))
        elif operation == "flush":
            closed = windows.flush_due(first * 1_000_000)
        elif operation == "close":
            closed = windows.close_open()
        elif operation == "expect":
            windows.expect_width(third)
            closed = []
        else:
            reshaped = TumblingWindows(first, rows=second, seconds=third, grace_s=grace_s, on_drop=on_drop)
            closed = reshaped.adopt(windows)
            windows = reshaped
        for window in closed:
            assert window.n_rows > 0 and window.features.ndim == 2  # one feature count per window
            assert window.start_us <= window.end_us
            in_windows += window.n_rows
    assert in_windows + windows.pending_rows + dropped["late"] + dropped["mismatched"] == added
