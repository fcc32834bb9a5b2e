"""The stream materializer's decisions on arrival (ahead of the clock, late, or an event time ahead of its
arrival: early), against a brute force.

A message whose stream time (a Redis id's milliseconds, a Kafka record's time) is more than the skew
ahead of the materializer's clock when read is refused as ahead, and on Kafka leaves its partition's
stream time where it was; every other message is judged late against that stream time as before.
Found in review: one record stamped far ahead moved its partition's stream time there, and every later
record, stamped correctly, was quarantined as late until the wall clock caught up.

The brute force restates the rule over the whole sequence of records read; the code under test keeps a
running state (``PartitionTimes``) and decides batch by batch (``refused_on_arrival``), as the Kafka
source and the materializer do. The score (the applied / rejected sets' trim) counts each record at most
at the clock plus the skew when it was read: one ten years ahead scored every later record of its
partition ten years ahead, and their ids stayed in Redis until the clock got there."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.ingestion.streaming.lateness import ahead_of_clock, refused_on_arrival
from control_plane.ingestion.streaming.stream_time import PartitionTimes

NOW_MS = 1_800_000_000_000
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Read:
    partition: int
    record_ms: int
    event_us: int
    clock_ms: int  # the materializer's clock when the record was read


def brute_force(reads: list[Read], skew_s: int, lateness_s: int) -> list[tuple[str, int, int]]:
    """Per record: its decision (``ahead``, ``late``, ``early`` or ``accepted``), its arrival time and its
    score, straight from the rule, each computed from scratch over the records read before it."""
    out = []
    for i, read in enumerate(reads):
        mine = [r for r in reads[: i + 1] if r.partition == read.partition]
        is_ahead = [r.record_ms > r.clock_ms + skew_s * 1000 for r in mine]
        on_time = [r.record_ms for r, a in zip(mine, is_ahead, strict=True) if not a]
        if is_ahead[-1]:
            earlier = on_time  # the record itself is not among them
            arrival = max(earlier) if earlier else read.record_ms
            decision = "ahead"
        else:
            arrival = max(on_time)
            # late: the arrival more than the lateness after the event time (in whole microseconds);
            # early: the event time more than the skew after the arrival
            if arrival * 1000 - lateness_s * 1_000_000 > read.event_us:
                decision = "late"
            elif read.event_us > (arrival + skew_s * 1000) * 1000:
                decision = "early"
            else:
                decision = "accepted"
        # The score: every record read so far in the partition, each at most at its limit when read.
        out.append((decision, arrival, max(min(r.record_ms, r.clock_ms + skew_s * 1000) for r in mine)))
    return out


def decided(reads: list[Read], cuts: list[int], skew_s: int, lateness_s: int) -> list[tuple[str, int, int]]:
    """The code's decisions: one running ``PartitionTimes`` (the Kafka source's), batches cut at
    ``cuts`` and each judged by ``refused_on_arrival`` (the materializer's)."""
    times = PartitionTimes()
    out: list[tuple[str, int, int]] = []
    bounds = [0, *sorted(set(cuts)), len(reads)]
    for start, end in itertools.pairwise(bounds):
        batch = reads[start:end]
        if not batch:
            continue
        judged = []
        for read in batch:
            limit = read.clock_ms + skew_s * 1000
            judged.append((times.observe(read.partition, read.record_ms, limit), limit))
        ahead_rows = [k for k, (t, _limit) in enumerate(judged) if t.ahead]
        found = ahead_of_clock(
            [batch[k].record_ms for k in ahead_rows],
            [judged[k][1] for k in ahead_rows],
            skew_s,
            "record time",
        )
        ahead = {ahead_rows[k]: reason for k, reason in found.items()}
        assert len(ahead) == len(ahead_rows)  # the limit the source judged by is the one the reason uses
        event_us = np.array([r.event_us for r in batch], dtype=np.int64)
        arrivals = [t.arrival_ms for t, _ in judged]
        refused = refused_on_arrival(event_us, arrivals, ahead, (lateness_s, skew_s), "ts")
        for k, (t, _limit) in enumerate(judged):
            reason = refused.get(k)
            if reason is None:
                decision = "accepted"
            elif "ahead of the materializer's clock" in reason:
                decision = "ahead"
            elif "ahead of its arrival in the stream" in reason:
                decision = "early"
            else:
                assert "before its arrival in the stream" in reason, reason
                decision = "late"
            out.append((decision, t.arrival_ms, t.score_ms))
    return out


# Record times near the clock (within the skew or just past it) and far ahead (years), event times
# around them: the boundaries of both rules are hit often.
OFFSET_MS = st.one_of(
    st.integers(-2 * HOUR_MS, 2 * HOUR_MS),
    st.integers(-5, 5).map(lambda d: 300_000 + d),  # just around the default skew
    st.integers(HOUR_MS, 10 * 365 * 24 * HOUR_MS),
)


@st.composite
def reads(draw: st.DrawFn) -> tuple[list[Read], list[int], int, int]:
    skew_s = draw(st.sampled_from([0, 1, 300, 3600]))
    lateness_s = draw(st.sampled_from([0, 1, 900, 3600]))
    n = draw(st.integers(1, 30))
    clock, out = NOW_MS, []
    for _ in range(n):
        clock += draw(st.integers(0, 120_000))  # the clock never goes back between reads
        record_ms = clock + draw(OFFSET_MS)
        event_us = (record_ms + draw(st.integers(-2 * HOUR_MS, HOUR_MS))) * 1000 + draw(st.integers(0, 999))
        out.append(Read(draw(st.integers(0, 2)), record_ms, event_us, clock))
    cuts = draw(st.lists(st.integers(0, n), max_size=5))
    return out, cuts, skew_s, lateness_s


@settings(max_examples=500, deadline=None)
@given(case=reads())
def test_decisions_on_arrival_equal_the_brute_force_whatever_the_batches(
    case: tuple[list[Read], list[int], int, int],
) -> None:
    records, cuts, skew_s, lateness_s = case
    assert decided(records, cuts, skew_s, lateness_s) == brute_force(records, skew_s, lateness_s)


@settings(max_examples=300, deadline=None)
@given(case=reads())
def test_no_record_is_late_because_of_one_ahead_of_the_clock(
    case: tuple[list[Read], list[int], int, int],
) -> None:
    """The bound itself: the stream time a record is judged against is never past the clock plus the
    skew, so a record whose event time is within the lateness of that is never late, however far ahead
    the records before it were stamped. Before, one record ten years ahead made every later one late."""
    records, cuts, skew_s, lateness_s = case
    for read, (decision, arrival, _score) in zip(
        records, decided(records, cuts, skew_s, lateness_s), strict=True
    ):
        if decision != "ahead":
            assert arrival <= read.clock_ms + skew_s * 1000
        if read.event_us >= (read.clock_ms + skew_s * 1000 - lateness_s * 1000) * 1000:
            assert decision != "late", (read, arrival)


def test_a_record_ten_years_ahead_leaves_the_next_ones_on_time() -> None:
    """The review's case, spelt out: on time, ten years ahead, on time again."""
    ten_years_ms = 10 * 365 * 24 * HOUR_MS
    records = [
        Read(0, NOW_MS, NOW_MS * 1000, NOW_MS),
        Read(0, NOW_MS + ten_years_ms, NOW_MS * 1000, NOW_MS + 1),
        Read(0, NOW_MS + 2, (NOW_MS + 2) * 1000, NOW_MS + 2),
    ]
    found = decided(records, [], 300, 3600)
    assert [d for d, _arrival, _score in found] == ["accepted", "ahead", "accepted"]
    # Its score (the trim's) counts it at the clock plus the skew when it was read, and so does the one
    # after it: before, ten years ahead, and their ids stayed in Redis until the clock got there.
    assert [score for _d, _arrival, score in found] == [NOW_MS, NOW_MS + 1 + 300_000, NOW_MS + 1 + 300_000]


@settings(max_examples=300, deadline=None)
@given(case=reads())
def test_scores_grow_along_a_partition_and_never_pass_the_limit_read_under(
    case: tuple[list[Read], list[int], int, int],
) -> None:
    """What the trim relies on: along a partition a score never goes down (so a record at or after the
    committed offset scores at least the record there, which bounds the resume point), and never passes
    the greatest clock-plus-skew so far (so it is trimmed once the clock is a reach past it)."""
    records, cuts, skew_s, lateness_s = case
    found = decided(records, cuts, skew_s, lateness_s)
    last: dict[int, int] = {}
    for read, (_decision, _arrival, score) in zip(records, found, strict=True):
        assert score >= last.get(read.partition, score)
        assert score <= read.clock_ms + skew_s * 1000  # the clock never goes back between reads here
        last[read.partition] = score


def test_the_reason_names_the_time_the_clock_and_the_setting() -> None:
    reason = ahead_of_clock([NOW_MS + 3 * HOUR_MS], [NOW_MS + 300_000], 300, "stream id")[0]
    assert reason.startswith(
        "stream id 2027-01-15T11:00:00Z is 3 h ahead of the materializer's clock (2027-01-15T08:00:00Z)"
    )
    assert "it allows 300 s (--max-future-skew-s)" in reason
    assert "Redis gives every later `*` entry an id after it" in reason
