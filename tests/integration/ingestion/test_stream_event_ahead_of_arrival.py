"""An event stamped ahead of its arrival in the stream cannot make its entity's on-time events late.

Windows end at each entity's newest event time (``kernels/windows.py``), and validation lets an event time
be up to ``--max-future-s`` (a day) ahead of now. Found in review: one event of a sensor stamped 50 minutes
ahead of its arrival (a producer's clock, or a time set by hand) moved that sensor's windows 50 minutes
ahead, and the sensor's events arriving on time after it were aggregated into the wrong windows (the
10-minute count as of the future event left them out); stamped 5 hours ahead, they were quarantined as
older than every window. Now an event whose event time is more than ``--max-future-skew-s`` (300 s) after
its arrival (its stream time: a Redis id's milliseconds) is quarantined with a reason saying so, before it
reaches the windows, and the on-time events are applied as if it had never come. The counts add up:
received = accepted + quarantined + duplicates (the late and the early ones among the quarantined), and
every accepted event wrote its history row. Real redis-server, SQLite, Parquet offline store."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from control_plane.ingestion import quarantine
from tests.integration.ingestion.taps_stream import run_taps, taps_registry
from tests.integration.ingestion.test_stream_restart import (
    BUCKET_S,
    HOUR_MS,
    LATENESS_S,
    Life,
    Tap,
    TapsRegistry,
    brute_force,
)

MINUTE_MS = 60_000
SKEW_MS = 300_000  # DEFAULT_MAX_FUTURE_SKEW_S


@pytest.fixture
def taps(tmp_path: Path) -> TapsRegistry:
    """The taps view of test_stream_restart.py (windows of 1 h at most, 10-minute buckets)."""
    return taps_registry(tmp_path)


def _run(
    taps: TapsRegistry, redis_url: str, events: list[Tap], lives: list[Life | None]
) -> tuple[list[float], list[int], int, list[quarantine.QuarantinedRecord]]:
    """The events through one materializer per life; returns the first event's sensor's online values,
    the totals of all lives (received, accepted, quarantined, duplicates), the history rows written and
    the run's quarantined records."""
    bucket_ms = BUCKET_S * 1000  # a base on a bucket's start: the buckets below are the same every run
    base_ms = (int(time.time() * 1000) - 12 * HOUR_MS) // bucket_ms * bucket_ms
    run = run_taps(taps, redis_url, events, lives, LATENESS_S, base_ms)
    t = run.totals
    return run.online, [t.received, t.accepted, t.quarantined, t.duplicates], run.history_rows, run.records


@pytest.mark.parametrize("ahead_ms", [50 * MINUTE_MS, 5 * HOUR_MS], ids=["50min", "5h"])
@pytest.mark.parametrize("lives", [[None], [Life(quota=1, pending=1), None]], ids=["straight", "restart"])
def test_an_event_stamped_ahead_of_its_arrival_is_quarantined_and_its_entitys_on_time_events_count(
    taps: TapsRegistry, redis_url: str, ahead_ms: int, lives: list[Life | None]
) -> None:
    # Sensor 0: F reaches the stream at 1:00, stamped ahead; A reaches it 1 ms later, on time (1:00).
    future = Tap(0, 3600 + ahead_ms // 1000, -ahead_ms, 10)
    on_time = Tap(0, 3600, 1, 1)
    online, (received, accepted, quarantined, duplicates), history, records = _run(
        taps, redis_url, [future, on_time], lives
    )

    assert received == accepted + quarantined + duplicates
    assert (accepted, quarantined) == (1, 1)
    assert history == accepted  # every accepted event was applied, and wrote its row
    assert online == brute_force([(on_time, 0, 0)])[0][-1]  # as if F had never come: A's own windows
    assert len(records) == 1
    reason = records[0].reason
    assert reason.startswith("event_ts: event time "), reason
    for told in (
        "ahead of its arrival in the stream",
        "it allows 300 s (--max-future-skew-s)",
        "would move its entity's windows ahead",
    ):
        assert told in reason, reason


def test_the_bound_is_the_skew_allowed(taps: TapsRegistry, redis_url: str) -> None:
    """Exactly 300 s ahead of its arrival an event is applied; 1 ms more and it is quarantined."""
    events = [Tap(1, 3600, -SKEW_MS, 1), Tap(1, 7200, -SKEW_MS - 1, 100)]
    online, (received, accepted, quarantined, _), history, records = _run(taps, redis_url, events, [None])
    assert (received, accepted, quarantined, history) == (2, 1, 1, 1)
    assert online[1] == 1.0  # sum_1h holds the first only
    assert len(records) == 1 and "ahead of its arrival in the stream" in records[0].reason


def test_a_run_refusing_events_ahead_of_arrival_compares_the_clocks_once(
    taps: TapsRegistry, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis clock far behind the producers' quarantines every event as ahead of its arrival: the run
    reads Redis's clock (TIME) once, at the first such refusal. This redis-server's clock is this host's,
    so it says they agree, and warns of nothing (``tests/unit/ingestion/test_clock_agreement.py`` holds the
    decision between two readings)."""
    caplog.set_level(logging.INFO, logger=_CLOCK_LOGGER)
    events = [Tap(1, 3600, 0, 1), Tap(1, 7200, -SKEW_MS - 1, 100), Tap(1, 7300, -SKEW_MS - 1, 100)]
    _, (_, accepted, quarantined, _), _, _ = _run(taps, redis_url, events, [None])
    assert (accepted, quarantined) == (1, 2)
    said = [r for r in caplog.records if r.name == _CLOCK_LOGGER]
    assert [r.levelno for r in said] == [logging.INFO], [r.getMessage() for r in said]
    assert "Redis's clock agrees with this host's (within 5 s)" in said[0].getMessage()


_CLOCK_LOGGER = "control_plane.ingestion.streaming.clock_agreement"
