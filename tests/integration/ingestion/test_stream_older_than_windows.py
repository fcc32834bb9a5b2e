"""An event older than every window of its entity is quarantined, not counted as accepted.

Windows end at each entity's newest event time, and the window kernel cannot apply an event whose bucket
lies before the ring of its entity (``kernels/windows.py``). The lateness check does not keep such events
out in every configuration: the lateness may be longer than the longest window (the default 3600 s
against a view of 1-hour windows at most; the flags allow up to 100 years). Found in review: such an event
was counted as accepted, and written to the history as a row repeating its entity's values, though it
changed nothing. Now it is quarantined with a reason, and the counts add up: received = accepted +
quarantined + duplicates, and every accepted event wrote its history row. (An entity's newest event time
stamped hours ahead of the stream made an event arriving on time older than every window too; such an
event time is now quarantined itself: test_stream_event_ahead_of_arrival.py.) Real redis-server, SQLite,
Parquet offline store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from control_plane.ingestion import quarantine
from tests.integration.ingestion.taps_stream import run_taps, taps_registry
from tests.integration.ingestion.test_stream_restart import (
    BUCKET_S,
    HOUR_MS,
    Life,
    Tap,
    TapsRegistry,
    brute_force,
)

# The taps view (test_stream_restart.py): windows of 1 h at most, in 10-minute buckets.
WINDOW_S = 3600

# Sensor 1: lateness 3 h, longer than the window. C on time, then D 2 h late, within the lateness but
# before C's window.
LATE_WITHIN = [Tap(1, 2 * 3600, 0, 10), Tap(1, 0, 2 * HOUR_MS + 1, 1)]


@pytest.fixture
def taps(tmp_path: Path) -> TapsRegistry:
    """The taps view of test_stream_restart.py, in a registry of its own."""
    return taps_registry(tmp_path)


def _run(
    taps: TapsRegistry, redis_url: str, events: list[Tap], lateness_s: int, lives: list[Life | None]
) -> tuple[list[float], list[int], int, list[quarantine.QuarantinedRecord]]:
    """The events through one materializer per life; returns the sensor's online values, the totals of
    all lives (received, accepted, quarantined, duplicates), the history rows written and the run's
    quarantined records."""
    bucket_ms = BUCKET_S * 1000  # a base on a bucket's start: the buckets below are the same every run
    base_ms = (int(time.time() * 1000) - 12 * HOUR_MS) // bucket_ms * bucket_ms
    run = run_taps(taps, redis_url, events, lives, lateness_s, base_ms)
    t = run.totals
    return run.online, [t.received, t.accepted, t.quarantined, t.duplicates], run.history_rows, run.records


@pytest.mark.parametrize("lives", [[None], [Life(quota=1, pending=1), None]], ids=["straight", "restart"])
def test_an_event_older_than_every_window_is_quarantined_not_counted_as_accepted(
    taps: TapsRegistry, redis_url: str, lives: list[Life | None]
) -> None:
    events = LATE_WITHIN
    online, (received, accepted, quarantined, duplicates), history, records = _run(
        taps, redis_url, events, 3 * WINDOW_S, lives
    )

    assert received == accepted + quarantined + duplicates
    assert (accepted, quarantined) == (1, 1)
    assert history == accepted  # every accepted event was applied, and wrote its row
    only_first = brute_force([(events[0], 0, 0)])[events[0].sensor][-1]
    assert online == only_first
    assert len(records) == 1
    reason = records[0].reason
    assert reason.startswith("event_ts: event time "), reason
    assert "where the view's longest window (1 h) starts as of the newest event time of its entity" in reason
    assert "the event would be in none of the windows and change no value" in reason


def test_the_bound_is_the_first_bucket_of_the_longest_window(taps: TapsRegistry, redis_url: str) -> None:
    """Windows are bucket-aligned (10-minute buckets): as of the newest event at 2:09, the 1-hour window
    starts at 1:10. An event at 1:10 is applied (59 min before the newest), one at 1:09:59 is not."""
    newest_s = 2 * 3600 + 9 * 60
    inside, outside = 3600 + 10 * 60, 3600 + 10 * 60 - 1
    events = [
        Tap(2, newest_s, 0, 10),
        Tap(2, inside, (newest_s - inside) * 1000 + 1, 1),
        Tap(2, outside, (newest_s - outside) * 1000 + 2, 100),
    ]
    online, (received, accepted, quarantined, _), history, records = _run(
        taps, redis_url, events, 3 * WINDOW_S, [None]
    )
    assert (received, accepted, quarantined, history) == (3, 2, 1, 2)
    assert online[1] == 11.0  # sum_1h holds the first two
    assert len(records) == 1 and "is before " in records[0].reason
