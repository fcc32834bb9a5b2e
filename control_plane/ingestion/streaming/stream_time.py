"""A Kafka partition's stream time, and the bound on how far ahead of the clock a record may move it.

A Kafka record carries the time its producer stamped (CreateTime), and a partition's stream time is the
greatest record time read so far: the materializer judges lateness against it (``lateness.py``). One
record stamped far ahead of the clock (a producer's clock, or a timestamp it set by hand) moved it there,
and every later record of the partition, stamped correctly, was quarantined as late until the wall clock
caught up: the partition was unusable. So a record stamped more than ``max_future_skew_s`` ahead of the
materializer's clock when it is read is quarantined as ahead (``lateness.ahead_of_clock``) and leaves
the *arrival* time, which lateness is judged against, where it was.

Two times per record, because they serve two purposes:

* ``arrival_ms``: the greatest time of the records read so far in the partition, up to this one, that
  were not ahead of the clock: what lateness is judged against.
* ``score_ms``: the greatest time of every record read so far in the partition, up to this one, each
  taken at most the limit it was read under (the clock then plus the skew): the score of its id in the
  applied / rejected sets, which are trimmed by it. Monotone along the partition, so a record at or after
  its partition's committed offset (a crash between the Redis commit and Kafka's redelivers it) scores at
  or above the score of the record at that offset, which bounds the resume point
  (``KafkaSource.resume_ms``): no trim reaches it, whatever its own time. Each record counted at most at
  its limit: counted at its own time, one record stamped ten years ahead scored every later record of its
  partition ten years ahead too, and their members stayed in Redis until the clock got there.

Pure and stateful per source, so that a property test holds it to a brute-force reference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

#: How far ahead of the materializer's clock a message's stream time may be (``--max-future-skew-s``):
#: room for producers' clocks ahead of the materializer's host, far below the default lateness (1 h), so
#: that a stream time this far ahead makes no on-time event late. Light to import: ``flags.py`` reads it.
DEFAULT_MAX_FUTURE_SKEW_S = 300


def wall_clock_ms() -> int:
    """The materializer's clock, which stream times are bounded by (milliseconds since 1970)."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class RecordTimes:
    """What ``PartitionTimes.observe`` says of one record (times in ms since 1970)."""

    score_ms: int
    arrival_ms: int
    ahead: bool


@dataclass
class PartitionTimes:
    """The stream times of the partitions read by one consumer since it started (or was assigned them)."""

    _score_ms: dict[int, int] = field(default_factory=dict)
    _arrival_ms: dict[int, int] = field(default_factory=dict)

    def observe(self, partition: int, record_ms: int, limit_ms: int) -> RecordTimes:
        """Takes the next record read from ``partition`` (its time ``record_ms``); ``limit_ms`` is the
        clock when it was read plus the skew allowed: a record stamped later is ahead. An ahead record's
        arrival time is the partition's before it, or its own when it is the first read there (it is
        refused as ahead whatever its arrival time). Its score is the partition's greatest record time up
        to it, each record's taken at most at the limit it was read under."""
        counted = min(record_ms, limit_ms)  # a record ahead counts at its limit (module doc)
        score = max(self._score_ms.get(partition, counted), counted)
        self._score_ms[partition] = score
        ahead = record_ms > limit_ms
        before = self._arrival_ms.get(partition)
        if ahead:
            return RecordTimes(score, record_ms if before is None else before, True)
        arrival = record_ms if before is None else max(before, record_ms)
        self._arrival_ms[partition] = arrival
        return RecordTimes(score, arrival, False)
