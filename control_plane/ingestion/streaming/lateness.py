"""Why an accepted event is not applied after all, in the quarantine's words: it arrived later than the
lateness, or it is older than every window of its entity.

The lateness bound: an event whose stream time is more than ``lateness_s`` after its event time is
quarantined, not applied. The rebuild after a restart re-reads the stream only from ``R - max window -
lateness`` (materializer docstring), so it holds again exactly the events that arrived within the
lateness. An event applied live although it arrived later would be missing from the rebuilt windows: the
values emitted after a restart would then depend on when the materializer restarted. Refused with a
reason instead, and counted as quarantined, the live and the rebuilt state stay the same.

Older than the windows: windows end at each entity's newest event time, so an event within the lateness
can still lie before the start of its entity's longest window: the lateness may be longer than that
window (3600 s, the default, against a view of 10-minute windows), and an entity's newest event time
may be ahead of the stream (a producer's clock; validation allows ``max_future``). The window kernel
does not apply such an event (``WindowState.apply_marked``); it was counted as accepted though it changed
nothing, and written to the history as a row repeating its entity's values. It is quarantined with a
reason instead, as a late one is."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def too_late(
    event_us: npt.NDArray[np.int64], stream_ms: Sequence[int], lateness_s: int, column: str
) -> dict[int, str]:
    """The rows (of ``event_us``, event times in microseconds) whose stream time (``stream_ms``, same
    order) is more than ``lateness_s`` after their event time, each with the reason it is refused."""
    stream = np.asarray(stream_ms, dtype=np.int64)
    if stream.shape != event_us.shape:
        raise ValueError(f"{stream.size} stream times for {event_us.size} events")
    # stream - lateness > event_us / 1000 exactly, in whole milliseconds (floor keeps it exact). One
    # vector comparison: this runs on every batch of the materializer's hot loop.
    late = np.flatnonzero(stream - lateness_s * 1000 > event_us // 1000)
    return {int(row): _reason(int(event_us[row]), int(stream[row]), lateness_s, column) for row in late}


def older_than_windows(event_us: int, newest_us: int, bucket_us: int, n_buckets: int, column: str) -> str:
    """Why an event (event time ``event_us``) in none of its entity's windows, as of the entity's newest
    event time ``newest_us`` (windows of ``n_buckets`` buckets of ``bucket_us`` at most), is refused."""
    window_start_us = (newest_us // bucket_us - n_buckets + 1) * bucket_us
    return (
        f"{column}: event time {_moment(event_us)} is before {_moment(window_start_us)}, where the view's"
        f" longest window ({_span(bucket_us * n_buckets)}) starts as of the newest event time of its entity"
        f" ({_moment(newest_us)}); the event would be in none of the windows and change no value"
    )


def _reason(event_us: int, stream_ms: int, lateness_s: int, column: str) -> str:
    delay_us = stream_ms * 1000 - event_us
    return (
        f"{column}: event time {_moment(event_us)} is {_span(delay_us)} before its arrival in the stream"
        f" ({_moment(stream_ms * 1000)}); the view allows {lateness_s} s of lateness (a later event"
        " would be left out of the windows rebuilt after a restart)"
    )


def _moment(us: int) -> str:
    try:
        return (_EPOCH + timedelta(microseconds=us)).isoformat().replace("+00:00", "Z")
    except OverflowError:
        return f"{us} µs since 1970"


def _span(us: int) -> str:
    """``18000000000`` -> ``5 h``; ``3723500000`` -> ``1 h 2 min 3.5 s``."""
    parts = []
    for unit, size in (("d", 86_400_000_000), ("h", 3_600_000_000), ("min", 60_000_000)):
        if us >= size:
            parts.append(f"{us // size} {unit}")
            us %= size
    if us or not parts:
        parts.append(f"{us / 1_000_000:.6f}".rstrip("0").rstrip(".") + " s")
    return " ".join(parts)
