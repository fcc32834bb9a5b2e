"""The lateness bound: an event whose stream time is more than ``lateness_s`` after its event time is
quarantined, not applied.

The rebuild after a restart re-reads the stream only from ``R - max window - lateness`` (materializer
docstring), so it holds again exactly the events that arrived within the lateness. An event applied
live although it arrived later would be missing from the rebuilt windows: the values emitted after a
restart would then depend on when the materializer restarted. Refused with a reason instead, and
counted as quarantined, the live and the rebuilt state stay the same."""

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
