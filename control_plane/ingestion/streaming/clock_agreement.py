"""Whether Redis's clock agrees with this host's: said once per run, when events are refused by time.

A Redis stream's ``*`` ids are Redis's clock, and they are the stream time every event is judged against
(``lateness.py``): a Redis host whose clock is more than ``--max-future-skew-s`` behind the producers'
quarantines every event as ahead of its arrival, one more than the lateness ahead of theirs every event as
late, and one more than the skew ahead of this host's every message as ahead of the clock. Each reason is
true of the stream times, and none of them names the cause. So the first time a run refuses an event by
its stream time (ahead of the clock, late or ahead of its arrival), Redis's clock (``TIME``) is read once
and compared with this host's, which stands for the producers' (a view's producers and materializer
usually keep the same time): more than ``CLOCK_AGREEMENT_MS`` apart, a warning names both clocks and the
skew setting; within it, an INFO line says they agree, so that the refusals are the events' own."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis

from control_plane.ingestion.streaming.lateness import moment, span
from control_plane.ingestion.streaming.stream_time import wall_clock_ms

_log = logging.getLogger(__name__)

#: How far apart Redis's clock and this host's may be before a run that refuses events by time warns:
#: a few seconds, above the time a ``TIME`` call and a busy host take, far below the default skew (300 s).
CLOCK_AGREEMENT_MS = 5_000


def clock_disagreement(redis_ms: int, local_ms: int, skew_s: int, stream: str) -> str | None:
    """The warning for Redis's clock read as ``redis_ms`` while this host's read ``local_ms`` (ms since
    1970), or None when they are at most ``CLOCK_AGREEMENT_MS`` apart. ``skew_s``: ``--max-future-skew-s``."""
    apart_ms = redis_ms - local_ms
    if abs(apart_ms) <= CLOCK_AGREEMENT_MS:
        return None
    direction = "behind" if apart_ms < 0 else "ahead of"
    consequence = (
        "events stamped by producers on this host's time are quarantined as ahead of their arrival once"
        f" it is more than {skew_s} s (--max-future-skew-s)"
        if apart_ms < 0
        else "`*` ids are quarantined as ahead of the materializer's clock once it is more than"
        f" {skew_s} s (--max-future-skew-s), and events as late once it is more than the lateness"
    )
    return (
        f"stream {stream}: Redis's clock ({moment(redis_ms * 1000)}) is {span(abs(apart_ms) * 1000)}"
        f" {direction} this host's ({moment(local_ms * 1000)}); Redis's clock gives `*` ids their stream"
        f" time, so {consequence}: set the Redis host's clock right (NTP)"
    )


class RedisClockCheck:
    """Reads Redis's clock once per run, at the first refusal by time (module doc), and logs the result."""

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        skew_s: int,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self._client, self._stream, self._skew_s, self._clock_ms = client, stream, skew_s, clock_ms
        self.done = False

    def once(self, retrying: Callable[[Callable[[], Any]], Any]) -> None:
        """Compares the clocks, the first time only; ``retrying`` runs the ``TIME`` call as the
        materializer's Redis calls run (an outage waited out)."""
        if self.done:
            return
        self.done = True
        try:
            seconds, micros = retrying(self._client.time)
        except redis.exceptions.ResponseError as refused:  # an ACL user without TIME: a diagnosis only
            _log.info(
                "stream %s: events were refused by their stream time; could not read Redis's clock (TIME)"
                " to compare it with this host's: %s",
                self._stream,
                refused,
            )
            return
        local_ms = self._clock_ms()  # read after the reply: an outage waited out does not count as skew
        redis_ms = int(seconds) * 1000 + int(micros) // 1000
        warning = clock_disagreement(redis_ms, local_ms, self._skew_s, self._stream)
        if warning is not None:
            _log.warning("%s", warning)
        else:
            _log.info(
                "stream %s: events were refused by their stream time; Redis's clock agrees with this"
                " host's (within %d s), so the refusals are the events' own",
                self._stream,
                CLOCK_AGREEMENT_MS // 1000,
            )
