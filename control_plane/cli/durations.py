"""Durations and times on ``aetherctl``'s command line, parsed the same way by every command.

A duration is what feature definitions take (:func:`~control_plane.features.durations.parse_duration`):
``90`` seconds, ``45s``, ``30m``, ``1.5h``, ``2d``, ``1h30m``. A time (``--since``, ``--until``) is an ISO
8601 time (``2026-11-24``, ``2026-11-24T10:00:00Z``; UTC unless it names an offset) or a duration back from
now. A malformed or out-of-range value is a :class:`~control_plane.cli.errors.UsageError` naming the flag,
raised before any call to a server.
"""

from __future__ import annotations

import datetime as dt
import time

from control_plane.cli.errors import UsageError
from control_plane.features.durations import MAX_DURATION_S, parse_duration

# Every time Aether stores or sends is int64 microseconds since the Unix epoch: a longer duration cannot
# be expressed at all (protobuf refuses it with "Value out of range"), and no time lies before the epoch.
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EXAMPLES = "90, 45s, 30m, 1.5h, 2d or 1h30m"


def duration_s(text: str, flag: str) -> int:
    """Seconds in the duration ``text`` given as ``flag``."""
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise UsageError(f"{flag}: invalid duration {text!r}: expected e.g. {_EXAMPLES}") from None
    if seconds > MAX_DURATION_S:
        raise UsageError(f"{flag}: duration {text!r} is too long (at most {MAX_DURATION_S // 86400}d)")
    return seconds


def time_us(text: str, flag: str, now_us: int | None = None) -> int:
    """Microseconds since the epoch of ``text`` given as ``flag``: an ISO 8601 time, or a duration back
    from ``now_us`` (default: now)."""
    now_us = time.time_ns() // 1000 if now_us is None else now_us
    try:
        seconds = parse_duration(text)
    except ValueError:
        micros = _iso_us(text, flag)
    else:
        micros = now_us - seconds * 1_000_000
    if micros < 0:
        raise UsageError(
            f"{flag}: {text!r} lies before 1970-01-01T00:00:00Z, the earliest time Aether records"
            " (give a shorter duration or a later time)"
        )
    return micros


def iso_time(text: str, flag: str) -> dt.datetime:
    """The ISO 8601 time ``text`` given as ``flag`` (UTC unless it names an offset), no duration: a
    window's bounds (``materialize --start/--end``), where "2h" would not say whether it counts back."""
    moment = _iso(text, flag, "an ISO 8601 time (2026-11-24 or 2026-11-24T10:00:00Z)")
    if moment < _EPOCH:
        raise UsageError(
            f"{flag}: {text!r} lies before 1970-01-01T00:00:00Z, the earliest time Aether records"
        )
    return moment


def _iso_us(text: str, flag: str) -> int:
    expected = f"an ISO 8601 time (2026-11-24T10:00:00Z) or a duration back from now ({_EXAMPLES})"
    # Exact integer arithmetic: float seconds times 1e6 is off by a microsecond for some times.
    return (_iso(text, flag, expected) - _EPOCH) // dt.timedelta(microseconds=1)


def _iso(text: str, flag: str, expected: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{flag}: invalid time {text!r}: expected {expected}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)
