"""Why an accepted event is not applied after all, in the quarantine's words: its place in the stream is
ahead of the clock, it arrived later than the lateness, its event time is ahead of its arrival, or it is
older than every window of its entity.

Ahead of the clock: a message's stream time (a Redis stream id's milliseconds, a Kafka record's time)
more than ``max_future_skew_s`` (``DEFAULT_MAX_FUTURE_SKEW_S``, 5 minutes; ``--max-future-skew-s``) after
the materializer's clock. Such a time comes from a producer, not from the stream's clock (an explicit
Redis id, a Kafka timestamp set by hand or by a clock that is wrong), and judged as a stream time it made
every later event of the stream (Kafka: of the partition) late until the wall clock caught up. Such a
message is quarantined with its own reason, and on Kafka it does not move its partition's stream time
(``stream_time.py``). A Redis stream's ids are its positions: Redis gives every ``*`` entry after an
explicit id ahead an id after it, so those entries are ahead too and refused with the same reason until
the clock reaches the id (the reason says so: only the producer, or a new stream, can fix that).

The lateness bound: an event whose stream time is more than ``lateness_s`` after its event time is
quarantined, not applied. The rebuild after a restart re-reads the stream only from ``R - max window -
lateness`` (materializer docstring), so it holds again exactly the events that arrived within the
lateness. An event applied live although it arrived later would be missing from the rebuilt windows: the
values emitted after a restart would then depend on when the materializer restarted. Refused with a
reason instead, and counted as quarantined, the live and the rebuilt state stay the same.

Ahead of its arrival: an event whose event time is more than ``max_future_skew_s`` after its arrival
(its stream time, as lateness is judged against) is quarantined. Windows end at each entity's newest event
time, and validation lets an event time be up to ``max_future`` (a day by default) ahead of now: applied,
one event stamped 50 minutes ahead (a producer's clock, a time set by hand) moved its entity's windows 50
minutes ahead, and the entity's events arriving on time after it were aggregated as of that future time
(left out of its shorter windows) or, once it was further ahead than the longest window, quarantined as
older than every window; the rebuild after a restart, which reads back ``lateness`` before the resume
point, also missed such an event once it was further ahead than that. So an event stream time does not
cover is refused, as a late one is: it cannot make its entity's on-time events late. Within the skew
(room for producers' clocks, 300 s by default) an event is applied, and its entity's windows may end that
much ahead of the stream. The quarantine holds it with its reason, for the producer to send again when
its time comes.

Older than the windows: windows end at each entity's newest event time, so an event within the lateness
can still lie before the start of its entity's longest window: the lateness may be longer than that
window (3600 s, the default, against a view of 10-minute windows), or an entity's newest event time may
be up to the skew ahead of the stream. The window kernel does not apply such an event
(``WindowState.apply_marked``); it was counted as accepted though it changed nothing, and written to the
history as a row repeating its entity's values. It is quarantined with a reason instead, as a late one
is.

Every event a read delivers is thus counted once: received = accepted (applied to the windows) +
quarantined (rejected by validation, ahead of the clock, late, ahead of its arrival, older than the
windows) + duplicates (applied or rejected before)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

from control_plane.ingestion.streaming.stream_time import DEFAULT_MAX_FUTURE_SKEW_S

__all__ = [
    "DEFAULT_MAX_FUTURE_SKEW_S",
    "ahead_of_arrival",
    "ahead_of_clock",
    "older_than_windows",
    "refused_on_arrival",
    "too_late",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ahead_of_clock(
    stream_ms: Sequence[int], limits_ms: Sequence[int], skew_s: int, what: str
) -> dict[int, str]:
    """The rows whose stream time (``stream_ms``) is after their limit (``limits_ms``, same order: the
    materializer's clock when the message was read, plus ``skew_s``), each with the reason it is refused.
    ``what`` names the time in the reason: ``stream id`` (Redis) or ``record time`` (Kafka)."""
    stream = np.asarray(stream_ms, dtype=np.int64)
    limits = np.asarray(limits_ms, dtype=np.int64)
    if stream.shape != limits.shape:
        raise ValueError(f"{stream.size} stream times for {limits.size} limits")
    ahead = np.flatnonzero(stream > limits)
    return {int(row): _ahead_reason(int(stream[row]), int(limits[row]), skew_s, what) for row in ahead}


def _ahead_reason(stream_ms: int, limit_ms: int, skew_s: int, what: str) -> str:
    clock_ms = limit_ms - skew_s * 1000
    consequence = (
        " (Redis gives every later `*` entry an id after it, so those are refused the same way until the"
        " clock reaches it: let Redis assign ids, or move the producers to a new stream)"
        if what == "stream id"
        else " (it does not move its partition's stream time, so later records are judged as before)"
    )
    return (
        f"{what} {moment(stream_ms * 1000)} is {span((stream_ms - clock_ms) * 1000)} ahead of the"
        f" materializer's clock ({moment(clock_ms * 1000)}); it allows {skew_s} s (--max-future-skew-s):"
        f" taken as the stream's time, every later event would be late{consequence}"
    )


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


def ahead_of_arrival(
    event_us: npt.NDArray[np.int64], stream_ms: Sequence[int], skew_s: int, column: str
) -> dict[int, str]:
    """The rows (of ``event_us``, event times in microseconds) whose event time is more than ``skew_s``
    after their stream time (``stream_ms``, same order), each with the reason it is refused."""
    stream = np.asarray(stream_ms, dtype=np.int64)
    if stream.shape != event_us.shape:
        raise ValueError(f"{stream.size} stream times for {event_us.size} events")
    # event_us > (stream + skew) * 1000 exactly: a stream time past int64 never gets here (unorderable).
    early = np.flatnonzero(event_us > (stream + skew_s * 1000) * 1000)
    return {int(row): _early_reason(int(event_us[row]), int(stream[row]), skew_s, column) for row in early}


def refused_on_arrival(
    event_us: npt.NDArray[np.int64],
    arrival_ms: Sequence[int],
    ahead: dict[int, str],
    bounds: tuple[int, int],
    column: str,
) -> dict[int, str]:
    """The rows refused as they reach the materializer, each with its reason: those ``ahead`` of the clock
    (``ahead_of_clock``, as the source judged them) with theirs, then those ``too_late`` or
    ``ahead_of_arrival`` against their arrival time (``arrival_ms``: the stream time the source judges
    lateness against). ``bounds``: the lateness and the skew allowed, in seconds."""
    lateness_s, skew_s = bounds
    late = too_late(event_us, arrival_ms, lateness_s, column)
    early = ahead_of_arrival(event_us, arrival_ms, skew_s, column)
    return {**late, **early, **ahead} if late or early else dict(ahead)


def older_than_windows(event_us: int, newest_us: int, bucket_us: int, n_buckets: int, column: str) -> str:
    """Why an event (event time ``event_us``) in none of its entity's windows, as of the entity's newest
    event time ``newest_us`` (windows of ``n_buckets`` buckets of ``bucket_us`` at most), is refused."""
    window_start_us = (newest_us // bucket_us - n_buckets + 1) * bucket_us
    return (
        f"{column}: event time {moment(event_us)} is before {moment(window_start_us)}, where the view's"
        f" longest window ({span(bucket_us * n_buckets)}) starts as of the newest event time of its entity"
        f" ({moment(newest_us)}); the event would be in none of the windows and change no value"
    )


def _reason(event_us: int, stream_ms: int, lateness_s: int, column: str) -> str:
    delay_us = stream_ms * 1000 - event_us
    return (
        f"{column}: event time {moment(event_us)} is {span(delay_us)} before its arrival in the stream"
        f" ({moment(stream_ms * 1000)}); the view allows {lateness_s} s of lateness (a later event"
        " would be left out of the windows rebuilt after a restart)"
    )


def _early_reason(event_us: int, stream_ms: int, skew_s: int, column: str) -> str:
    return (
        f"{column}: event time {moment(event_us)} is {span(event_us - stream_ms * 1000)} ahead of its"
        f" arrival in the stream ({moment(stream_ms * 1000)}); it allows {skew_s} s (--max-future-skew-s):"
        " applied, it would move its entity's windows ahead to it, and the entity's events arriving on"
        " time until then would be left out of them (late); send it again when its time comes"
    )


def moment(us: int) -> str:
    """``us`` microseconds since 1970 as an ISO 8601 UTC time (``...Z``), or as the number past year 9999."""
    try:
        return (_EPOCH + timedelta(microseconds=us)).isoformat().replace("+00:00", "Z")
    except OverflowError:
        return f"{us} µs since 1970"


def span(us: int) -> str:
    """``18000000000`` -> ``5 h``; ``3723500000`` -> ``1 h 2 min 3.5 s``."""
    parts = []
    for unit, size in (("d", 86_400_000_000), ("h", 3_600_000_000), ("min", 60_000_000)):
        if us >= size:
            parts.append(f"{us // size} {unit}")
            us %= size
    if us or not parts:
        parts.append(f"{us / 1_000_000:.6f}".rstrip("0").rstrip(".") + " s")
    return " ".join(parts)
