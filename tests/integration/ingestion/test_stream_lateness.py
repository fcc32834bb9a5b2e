"""Events that reach the stream later than the view's lateness are quarantined, not applied.

The rebuild after a restart re-reads the stream only from the resume point less the longest window and
the lateness. An event applied live although it arrived later (found in review) was no longer in the
rebuilt windows, with the events it had been aggregated with: the next value emitted dropped them, and
the aggregates depended on when the materializer restarted. Refused with a reason (counted as
quarantined), the values are the same with and without a restart. Real redis-server, SQLite, Parquet
offline store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from control_plane.ingestion import quarantine
from tests.integration.ingestion.taps_stream import run_taps, taps_registry
from tests.integration.ingestion.test_stream_restart import (
    HOUR_MS,
    LATENESS_S,
    Life,
    Tap,
    TapsRegistry,
    brute_force,
)

LATE_MS = 5 * HOUR_MS  # far beyond LATENESS_S (900 s)


@pytest.fixture
def taps(tmp_path: Path) -> TapsRegistry:
    """The taps view of test_stream_restart.py (1 h windows at most), in a registry of its own."""
    return taps_registry(tmp_path)


def _run(
    taps: TapsRegistry, redis_url: str, lives: list[Life | None]
) -> tuple[list[float], int, list[quarantine.QuarantinedRecord]]:
    """A on time, then B and C of the same sensor 5 h late, through one materializer per life; returns
    the online values, the quarantined count of all lives, and the run's quarantined records."""
    base_ms = int(time.time() * 1000) - 12 * HOUR_MS
    events = [Tap(0, 0, 0, 10), Tap(0, 1800, LATE_MS, 1), Tap(0, 1900, LATE_MS, 1)]
    run = run_taps(taps, redis_url, events, lives, LATENESS_S, base_ms)
    return run.online, run.totals.quarantined, run.records


@pytest.mark.parametrize(
    "lives", [[None], [Life(quota=2, pending=0), None], [Life(quota=1, pending=1), None]]
)
def test_events_later_than_the_lateness_are_quarantined_and_a_restart_changes_nothing(
    taps: TapsRegistry, redis_url: str, lives: list[Life | None]
) -> None:
    straight, quarantined, records = _run(taps, redis_url, [None])
    restarted, quarantined_restarted, records_restarted = _run(taps, redis_url, lives)

    # Only A is applied: sum_1h (index 1) is 10, not 10 + 1 + 1, with or without a restart.
    only_a = brute_force([(Tap(0, 0, 0, 10), 0, 0)])[0][-1]
    assert straight[1] == only_a[1] == 10.0
    assert restarted == straight
    assert quarantined == quarantined_restarted == 2
    for found in (records, records_restarted):
        assert len(found) == 2
        for record in found:
            assert "is 5 h before its arrival in the stream" in record.reason, record.reason
            assert "the view allows 900 s of lateness" in record.reason, record.reason


def test_an_event_exactly_at_the_lateness_is_applied(taps: TapsRegistry, redis_url: str) -> None:
    base_ms = int(time.time() * 1000) - 12 * HOUR_MS
    events = [Tap(1, 0, 0, 10), Tap(1, 60, LATENESS_S * 1000, 1), Tap(1, 120, LATENESS_S * 1000 + 1, 1)]
    run = run_taps(taps, redis_url, events, [None], LATENESS_S, base_ms)
    assert (run.totals.accepted, run.totals.quarantined) == (2, 1)
    assert run.online[1] == 11.0
