"""The rebuild after a restart re-reads far enough back for an event applied ahead of its arrival.

An event may be up to ``--max-future-skew-s`` (300 s) ahead of its arrival in the stream (its stream time)
and still be applied (``lateness.ahead_of_arrival``). The rebuild re-read the stream from ``R - longest
window - lateness`` (``R``: where the group resumes), the reach of a future event's windows in event time,
but took it as a reach in stream time: an applied event that arrived just before that point, stamped up to
the skew after it, lies inside those windows all the same, and was left out of the rebuilt state. Found in
review: with a lateness of 60 s (below the skew), a sensor's 1-hour sum after a restart missed an event
250 s ahead of its arrival that the same run without the restart counted; with the lateness of 900 s too,
for an event arriving late within it. The rebuild now reads the skew further back. Real redis-server,
SQLite, Parquet offline store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.ingestion.taps_stream import run_taps, taps_registry
from tests.integration.ingestion.test_stream_restart import BUCKET_S, HOUR_MS, Life, Tap, TapsRegistry


@pytest.fixture
def taps(tmp_path: Path) -> TapsRegistry:
    """The taps view of test_stream_restart.py (windows of 1 h at most, 10-minute buckets)."""
    return taps_registry(tmp_path)


# Sensor 0. AHEAD reaches the stream at 4000 s, stamped 250 s later (4250 s: the 10-minute bucket from
# 4200 s), within the skew: applied. LAST comes later, its event time at 7690 s (the bucket from 7200 s,
# whose 1-hour window holds the six buckets from 4200 s, AHEAD's too), arriving more than the longest window
# and the lateness after AHEAD's arrival: a materializer that dies with LAST pending rebuilds from LAST's
# arrival less 3600 s and the lateness, just after AHEAD's arrival.
AHEAD = Tap(0, 4250, -250_000, 1)


@pytest.mark.parametrize(
    ("lateness_s", "last"),
    [(60, Tap(0, 7690, 10_000, 100)), (900, Tap(0, 7690, 860_000, 100))],
    ids=["lateness-below-skew", "late-within-lateness"],
)
@pytest.mark.parametrize("lives", [[None], [Life(quota=1, pending=1), None]], ids=["straight", "restart"])
def test_a_restart_keeps_an_event_applied_ahead_of_its_arrival_in_the_windows(
    taps: TapsRegistry, redis_url: str, lateness_s: int, last: Tap, lives: list[Life | None]
) -> None:
    bucket_ms = BUCKET_S * 1000  # a base on a bucket's start: the buckets above are the same every run
    base_ms = (int(time.time() * 1000) - 12 * HOUR_MS) // bucket_ms * bucket_ms
    run = run_taps(taps, redis_url, [AHEAD, last], lives, lateness_s, base_ms)

    t = run.totals
    assert (t.received, t.accepted, t.quarantined) == (2, 2, 0)
    assert run.online[1] == 101.0  # sum_1h after LAST: AHEAD's 1 and LAST's 100, restart or not
