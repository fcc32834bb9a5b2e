"""Whether Redis's clock agrees with this host's (``clock_agreement.clock_disagreement``).

Found in review: a Redis host whose clock was more than ``--max-future-skew-s`` behind the producers'
quarantined every event as ahead of its arrival (Redis's clock gives ``*`` ids their stream time), and
nothing said why. A run that refuses events by time now compares the two clocks once; the decision is a
pure function of the two readings (a test cannot set redis-server's clock)."""

from __future__ import annotations

import pytest

from control_plane.ingestion.streaming.clock_agreement import CLOCK_AGREEMENT_MS, clock_disagreement

_NOW_MS = 1_800_000_000_000  # 2027-01-15T08:00:00Z


@pytest.mark.parametrize("apart_ms", [0, 1, -1, CLOCK_AGREEMENT_MS, -CLOCK_AGREEMENT_MS])
def test_clocks_within_the_agreement_say_nothing(apart_ms: int) -> None:
    assert clock_disagreement(_NOW_MS + apart_ms, _NOW_MS, 300, "events:taps") is None


def test_a_redis_clock_behind_names_both_clocks_the_skew_setting_and_ahead_of_arrival() -> None:
    warning = clock_disagreement(_NOW_MS - 10 * 60_000, _NOW_MS, 300, "events:taps")
    assert warning is not None
    for told in (
        "stream events:taps",
        "Redis's clock (2027-01-15T07:50:00Z) is 10 min behind this host's (2027-01-15T08:00:00Z)",
        "quarantined as ahead of their arrival",
        "300 s (--max-future-skew-s)",
    ):
        assert told in warning, warning


def test_a_redis_clock_ahead_says_ids_are_ahead_of_the_clock() -> None:
    warning = clock_disagreement(_NOW_MS + CLOCK_AGREEMENT_MS + 1, _NOW_MS, 120, "s")
    assert warning is not None
    assert "is 5.001 s ahead of this host's" in warning, warning
    assert "ahead of the materializer's clock once it is more than 120 s (--max-future-skew-s)" in warning
