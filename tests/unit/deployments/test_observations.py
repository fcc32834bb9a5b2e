"""Prediction-log entries as the canary controller reads them, and the histogram p99 against the exact one."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.deployments.observations import VariantTally, parse_entry


def test_entries_are_parsed_and_shadow_calls_skipped() -> None:
    base = {b"deployment": b"eta", b"variant": b"green", b"latency_ms": b"3.5"}
    assert parse_entry({**base, b"ok": b"1", b"role": b"served"}) == ("eta", "green", True, 3.5)
    assert parse_entry({**base, b"ok": b"0"}) == ("eta", "green", False, 3.5)
    assert parse_entry({**base, b"error_code": b"UNAVAILABLE"})[2] is False  # type: ignore[index]
    assert parse_entry({**base, b"error_code": b""})[2] is True  # type: ignore[index]
    assert parse_entry({**base, b"role": b"shadow"}) is None
    assert parse_entry({b"variant": b"x"}) is None


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.05, 50_000.0), min_size=1, max_size=400))
def test_p99_is_never_optimistic_and_within_the_bin_width(latencies: list[float]) -> None:
    tally = VariantTally()
    for value in latencies:
        tally.add(True, value)
    exact = float(np.sort(latencies)[int(np.ceil(0.99 * len(latencies))) - 1])
    estimate = tally.p99_ms()
    assert estimate is not None
    assert exact <= estimate <= exact * 1.05
    assert tally.observation().requests == len(latencies)


def test_errors_count_and_empty_tallies_have_no_p99() -> None:
    tally = VariantTally()
    assert tally.p99_ms() is None
    tally.add(False, float("nan"))
    assert (tally.requests, tally.errors, tally.p99_ms()) == (1, 1, None)
