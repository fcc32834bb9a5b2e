"""Prediction-log entries as the canary controller reads them, and the histogram p99 against the exact one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
import pytest
import redis
import redis.asyncio
from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.deployments.canary import Action, Decision, Policy, decide
from control_plane.deployments.log_entries import VariantTally, parse_entry, parse_gap
from control_plane.deployments.observations import PredictionLogObserver, StepObservations, StepWindow
from data_plane.prediction_log import PredictionLog, PredictionRecord
from data_plane.redis_client import RedisClient
from tests.support.prediction_log import writes_refused
from tests.unit.deployments.decisions import decide_fresh


def test_entries_are_parsed_and_shadow_calls_skipped() -> None:
    base = {b"deployment": b"eta", b"variant": b"green", b"latency_ms": b"3.5"}
    # (deployment, variant, failed on the server's side, latency, refused as the caller's mistake with)
    assert parse_entry({**base, b"ok": b"1", b"role": b"served"}) == ("eta", "green", False, 3.5, "")
    assert parse_entry({**base, b"ok": b"0"}) == ("eta", "green", True, 3.5, "")  # no code: a failure
    assert parse_entry({**base, b"ok": b"0", b"error_code": b"not_found"}) == (
        "eta",
        "green",
        False,
        3.5,
        "NOT_FOUND",
    )
    assert parse_entry({**base, b"error_code": b"UNAVAILABLE"})[2] is True  # type: ignore[index]
    assert parse_entry({**base, b"error_code": b""})[2] is False  # type: ignore[index]
    assert parse_entry({**base, b"role": b"shadow"}) is None
    assert parse_entry({b"variant": b"x"}) is None


SERVER_FAILURES = [
    "UNAVAILABLE",
    "INTERNAL",
    "UNKNOWN",
    "DATA_LOSS",
    "RESOURCE_EXHAUSTED",
    "DEADLINE_EXCEEDED",
    "FAILED_PRECONDITION",  # the served version does not fit its stored data or config
]
CALLER_ERRORS = [
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "CANCELLED",
    "OUT_OF_RANGE",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "ALREADY_EXISTS",
]


def test_only_failures_on_the_servers_side_are_errors() -> None:
    # A caller's own error (an entity without stored features, a malformed request, a caller that went
    # away) fails alike on every variant: it is a request of the canary's, never an error of its own.
    base = {b"deployment": b"eta", b"variant": b"green", b"latency_ms": b"1.0", b"ok": b"0"}
    for code in SERVER_FAILURES:
        assert parse_entry({**base, b"error_code": code.encode()})[2] is True, code  # type: ignore[index]
        assert parse_entry({b"deployment": b"eta", b"error_code": code.encode()})[2] is True, code  # type: ignore[index]
    for code in CALLER_ERRORS:
        assert parse_entry({**base, b"error_code": code.encode()})[2] is False, code  # type: ignore[index]
        assert parse_entry({b"deployment": b"eta", b"error_code": code.encode()})[2] is False, code  # type: ignore[index]
        # Counted as a refusal as the caller's mistake, to compare with the primary's.
        assert parse_entry({**base, b"error_code": code.encode()})[4] == code  # type: ignore[index]
    for code in SERVER_FAILURES:
        assert parse_entry({**base, b"error_code": code.encode()})[4] == "", code  # type: ignore[index]
    answered = {**base, b"ok": b"1", b"error_code": b"INVALID_ARGUMENT"}  # ok wins over a stray code
    assert parse_entry(answered)[4] == ""  # type: ignore[index]
    assert parse_entry({**base, b"error_code": b"SOMETHING_NEW"})[2] is True  # type: ignore[index]
    assert parse_entry({**base, b"ok": b"1", b"error_code": b"OK"})[2] is False  # type: ignore[index]


async def test_a_canary_failing_only_its_callers_requests_is_not_rolled_back(redis_url: str) -> None:
    # The canary answers exactly as the primary: 1 request in 10 asks for an entity without features
    # (NOT_FOUND), 1 in 20 is malformed (INVALID_ARGUMENT), 1 in 50 is cancelled by its caller.
    writer = redis.Redis.from_url(redis_url)
    for i in range(400):
        code = "OK"
        if i % 10 == 0:
            code = "NOT_FOUND"
        elif i % 20 == 5:
            code = "INVALID_ARGUMENT"
        elif i % 50 == 7:
            code = "CANCELLED"
        for variant in (b"blue", b"green"):
            entry: dict[FieldT, FieldT] = {
                b"deployment": b"eta",
                b"variant": variant,
                b"ok": b"1" if code == "OK" else b"0",
                b"error_code": code.encode(),
                b"latency_ms": b"2.0",
            }
            writer.xadd("log", entry)
    writer.xadd("log", {b"deployment": b"eta", b"variant": b"green", b"ok": b"0", b"error_code": b"INTERNAL"})
    writer.close()
    client = redis.asyncio.Redis.from_url(redis_url)
    window = StepWindow("eta", started_at_us=0)
    await window.read(client, "log")
    await client.aclose()
    canary, primary = window.observe("green"), window.observe("blue")
    assert (canary.requests, canary.errors) == (401, 1) and (primary.requests, primary.errors) == (400, 0)
    # Counted per variant all the same, to be compared: alike on both, they cancel out.
    assert canary.caller_errors == primary.caller_errors == 68
    assert canary.caller_codes == primary.caller_codes == ("NOT_FOUND", "INVALID_ARGUMENT", "CANCELLED")
    decision = decide_fresh(Policy(bake_seconds=0, min_requests=100), 0, 1.0, canary, primary)
    assert decision.action is Action.ADVANCE, decision.reason


async def test_the_canarys_own_refusals_are_kept_in_the_window_and_the_step_across_a_gap(
    redis_url: str,
) -> None:
    # The canary refuses every request INVALID_ARGUMENT (it reads a request-time feature the callers do
    # not send), the primary answers them; then the data plane drops entries (a gap marker).
    writer = redis.Redis.from_url(redis_url)
    for _ in range(150):
        for variant, code in ((b"blue", b"OK"), (b"green", b"INVALID_ARGUMENT")):
            entry: dict[FieldT, FieldT] = {
                b"deployment": b"eta",
                b"variant": variant,
                b"ok": b"1" if code == b"OK" else b"0",
                b"error_code": code,
                b"latency_ms": b"2.0",
            }
            writer.xadd("log", entry)
    client = redis.asyncio.Redis.from_url(redis_url)
    window = StepWindow("eta", started_at_us=0)
    await window.read(client, "log")
    canary, primary = window.observe("green"), window.observe("blue")
    assert (canary.requests, canary.errors, canary.caller_errors) == (150, 0, 150)
    assert canary.caller_codes == ("INVALID_ARGUMENT",) and primary.caller_errors == 0
    policy = Policy(bake_seconds=0, min_requests=100)
    decision = decide_fresh(policy, 0, 1.0, canary, primary)
    assert decision.action is Action.ROLLBACK and decision.reason.startswith(
        "canary refused 100.0% of requests as the caller's mistake (INVALID_ARGUMENT)"
        " against 0.0% for the primary"
    ), decision.reason
    writer.xadd("log", {b"role": b"gap", b"deployment": b"eta", b"dropped": b"3"})
    writer.close()
    await window.read(client, "log")
    await client.aclose()
    assert window.observe("green").caller_errors == 0  # the window restarted after the marker
    step = (window.observe_step("green"), window.observe_step("blue"))
    assert (step[0].caller_errors, step[1].caller_errors) == (150, 0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.05, 50_000.0), min_size=1, max_size=400))
def test_p99_is_never_optimistic_and_within_the_bin_width(latencies: list[float]) -> None:
    tally = VariantTally()
    for value in latencies:
        tally.add(False, value)
    exact = float(np.sort(latencies)[int(np.ceil(0.99 * len(latencies))) - 1])
    estimate = tally.p99_ms()
    assert estimate is not None
    assert exact <= estimate <= exact * 1.05
    assert tally.observation().requests == len(latencies)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.05, 50_000.0), min_size=2, max_size=150))
def test_the_second_slowest_request_is_never_optimistic_and_travels_with_the_observation(
    latencies: list[float],
) -> None:
    tally = VariantTally()
    for value in latencies:
        tally.add(False, value)
    exact = sorted(latencies)[-2]
    estimate = tally.second_slowest_ms()
    assert estimate is not None
    assert exact <= estimate <= exact * 1.05
    assert tally.observation().second_slowest_ms == estimate
    p99 = tally.p99_ms()
    # Up to 100 requests the p99 is the slowest request; past that, at most the second-slowest.
    assert p99 is not None and (p99 >= estimate if len(latencies) <= 100 else p99 <= estimate)


def test_one_request_has_no_second_slowest() -> None:
    tally = VariantTally()
    tally.add(False, 3.0)
    assert tally.second_slowest_ms() is None and tally.observation().second_slowest_ms is None


def test_errors_count_and_empty_tallies_have_no_p99() -> None:
    tally = VariantTally()
    assert tally.p99_ms() is None
    tally.add(True, float("nan"))
    assert (tally.requests, tally.errors, tally.p99_ms()) == (1, 1, None)


FieldT = bytes | bytearray | memoryview | str | int | float  # what redis-py's xadd takes
FIELD_NAMES = st.sampled_from(
    [b"deployment", b"variant", b"role", b"shadow", b"ok", b"error_code", b"latency_ms"]
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(FIELD_NAMES, st.binary(max_size=12)))
def test_any_bytes_in_an_entry_parse_or_are_skipped_never_raise(fields: dict[bytes, bytes]) -> None:
    # Any writer may append to the stream; an entry the reader cannot raise on is one it cannot stick on.
    parsed = parse_entry(fields)
    assert parsed is None or isinstance(parsed[0], str)


async def test_an_entry_that_is_not_utf8_does_not_stop_the_window(redis_url: str) -> None:
    writer = redis.Redis.from_url(redis_url)
    good: dict[FieldT, FieldT] = {
        b"deployment": b"eta",
        b"variant": b"green",
        b"ok": b"1",
        b"latency_ms": b"2.0",
    }
    writer.xadd("log", good, id="1-0")
    writer.xadd("log", {**good, b"variant": b"\xff\xfe"}, id="2-0")  # not UTF-8
    writer.xadd("log", good, id="3-0")
    writer.close()
    client = redis.asyncio.Redis.from_url(redis_url)
    window = StepWindow("eta", started_at_us=0)
    assert await window.read(client, "log") == 3
    assert window.observe("green").requests == 2
    assert await window.read(client, "log") == 0  # past the bad entry, not stuck on it
    await client.aclose()


async def test_a_window_behind_its_backlog_says_so_and_its_canary_is_not_promoted_on_part_of_it(
    redis_url: str,
) -> None:
    # 300 healthy requests of the canary, then 100 failing ones; the window reads 250 entries a pass.
    writer = redis.Redis.from_url(redis_url)
    for i in range(400):
        ok = i < 300
        for variant in (b"blue", b"green"):
            entry: dict[FieldT, FieldT] = {
                b"deployment": b"eta",
                b"variant": variant,
                b"ok": b"1" if ok or variant == b"blue" else b"0",
                b"error_code": b"" if ok or variant == b"blue" else b"INTERNAL",
                b"latency_ms": b"2.0",
            }
            writer.xadd("log", entry)
    writer.close()
    policy = Policy(bake_seconds=0, min_requests=100, max_error_rate=0.05)
    client = redis.asyncio.Redis.from_url(redis_url)
    window = StepWindow("eta", started_at_us=0, max_read_per_tick=250)
    try:
        assert await window.read(client, "log") == 250 and not window.caught_up
        first = decide_fresh(
            policy, 0, 60.0, window.observe("green"), window.observe("blue"), read_through=window.caught_up
        )
        # What was read so far is healthy, but the unread entries hold the failures: no advance yet.
        assert first.action is Action.HOLD and first.reason.startswith("reading the prediction log at 5%")
        while not window.caught_up:
            await window.read(client, "log")
    finally:
        await client.aclose()
    canary = window.observe("green")
    assert (canary.requests, canary.errors) == (400, 100)
    last = decide_fresh(policy, 0, 60.0, canary, window.observe("blue"), read_through=True)
    assert last.action is Action.ROLLBACK, last.reason


async def test_a_window_trimmed_before_it_was_read_restarts_and_its_canary_bakes_again(
    redis_url: str,
) -> None:
    # The stream keeps 1,000 entries. A step began 10 minutes ago; then 2,000 requests of which half
    # failed and 1,000 healthy ones were logged before the window read any (a control-plane restart reads
    # the step again from its start): the failures were trimmed away. Read on what was left, the window
    # was caught up and healthy, and with the step baked for 10 minutes the canary was promoted.
    now_us = time.time_ns() // 1000
    step_started_us = now_us - 600_000_000
    writer = redis.Redis.from_url(redis_url)
    pipe = writer.pipeline(transaction=True)  # all appended (and trimmed) before anything reads them
    for i in range(3000):
        failed = i < 2000 and i % 2 == 1
        entry: dict[FieldT, FieldT] = {
            b"deployment": b"eta",
            b"variant": b"green",
            b"ok": b"0" if failed else b"1",
            b"error_code": b"INTERNAL" if failed else b"",
            b"latency_ms": b"2.0",
        }
        pipe.xadd("log", entry, maxlen=1000, approximate=False)
    pipe.execute()
    # Another stream, never trimmed, all of it logged after its step began: nothing is missing there.
    writer.xadd("whole", {b"deployment": b"eta", b"variant": b"green", b"ok": b"1"})
    writer.close()
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        window = StepWindow("eta", started_at_us=step_started_us)
        assert await window.read(client, "log") == 1000 and window.caught_up
        whole = StepWindow("eta", started_at_us=step_started_us)
        assert await whole.read(client, "whole") == 1 and whole.since_us == step_started_us
    finally:
        await client.aclose()
    assert window.since_us >= now_us  # observed from the first entry left, not from the step's start
    canary = window.observe("green")
    assert (canary.requests, canary.errors) == (1000, 0)  # only what follows on without a gap
    policy = Policy(bake_seconds=60, min_requests=100, max_error_rate=0.05)
    baked_s = time.time() - max(step_started_us, window.since_us) / 1e6  # as the canary loop counts it
    decision = decide_fresh(policy, 0, baked_s, canary, window.observe("blue"), read_through=window.caught_up)
    assert decision.action is Action.HOLD and decision.reason.startswith("baking at 5%"), decision.reason


def _record(i: int, *, failed: bool) -> PredictionRecord:
    return PredictionRecord(
        request_id=f"r{i}", deployment="eta", model="eta", version=2, variant="green", role="served",
        routing_key="", ts_us=time.time_ns() // 1000, latency_ms=2.0, ok=not failed,
        error_code="INTERNAL" if failed else "OK",
    )  # fmt: skip


async def _wait(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5.0):
        while not condition():  # noqa: ASYNC110 (the writer's own counters; no event to wait on)
            await asyncio.sleep(0.001)


async def test_a_window_with_a_gap_marker_restarts_after_it_and_its_canary_bakes_again(
    redis_url: str,
) -> None:
    """The data plane's own writer logs 150 healthy canary requests, then cannot write the next 100
    (failures: Redis answers OOM) and, once Redis takes writes again, logs a gap marker and 120 healthy
    ones. Read without the marker, the window was 270 requests with no error: the canary was promoted."""
    step_started_us = time.time_ns() // 1000 - 600_000_000  # baked for ten minutes already
    client = RedisClient(redis_url, pool_size=1)
    log = PredictionLog(client, "log", sample_rate=0.0, maxlen=100_000, linger_s=0.0)
    log.start()
    try:
        for i in range(150):
            log.record(_record(i, failed=False))
        await _wait(lambda: log.written == 150)
        with writes_refused(redis_url):
            for i in range(150, 250):
                log.record(_record(i, failed=True))
            await _wait(lambda: log.dropped == 100)
        resumed_us = time.time_ns() // 1000
        for i in range(250, 370):
            log.record(_record(i, failed=False))
        await _wait(lambda: log.written == 270)
    finally:
        await log.stop()
        await client.close()
    reader = redis.asyncio.Redis.from_url(redis_url)
    try:
        window = StepWindow("eta", started_at_us=step_started_us)
        assert await window.read(reader, "log") == 271 and window.caught_up  # the marker too
    finally:
        await reader.aclose()
    canary = window.observe("green")
    assert (canary.requests, canary.errors) == (120, 0)  # only what follows the marker
    assert window.since_us >= resumed_us // 1000 * 1000  # the bake starts again at the marker
    assert window.restarted_by is not None
    assert window.restarted_by.startswith(
        "the data plane could not log 100 requests of the deployment between"
    )
    policy = Policy(bake_seconds=60, min_requests=100, max_error_rate=0.05)
    baked_s = time.time() - window.since_us / 1e6  # as the canary loop counts it
    decision = decide_fresh(policy, 0, baked_s, canary, window.observe("blue"), read_through=window.caught_up)
    assert decision.action is Action.HOLD and decision.reason.startswith("baking at 5%"), decision.reason
    # A marker whose numbers are unreadable is still a gap; a marker is never counted as a request.
    assert parse_gap({b"role": b"gap", b"deployment": b"eta", b"dropped": b"x"}) == ("eta", 0, None, None)
    assert parse_entry({b"role": b"gap", b"deployment": b"eta"}) is None


def _canary_entry(*, failed: bool) -> dict[FieldT, FieldT]:
    return {
        b"deployment": b"eta",
        b"variant": b"green",
        b"ok": b"0" if failed else b"1",
        b"error_code": b"INTERNAL" if failed else b"",
        b"latency_ms": b"2.0",
    }


def _decide_as_the_loop_does(policy: Policy, seen: StepObservations) -> Decision:
    return decide(
        policy,
        0,
        time.time() - seen.since_us / 1e6,
        seen.canary,
        seen.primary,
        read_through=seen.caught_up,
        newest_canary_age_s=0.0,
        whole_step=(seen.canary_step, seen.primary_step),
    )


async def test_failures_read_before_a_gap_marker_still_roll_the_canary_back(redis_url: str) -> None:
    """150 canary requests, 30 of them failed, then a gap marker and 120 healthy ones, all read in one
    pass: the window restarted after the marker and forgot the failures, and the canary only baked again
    (a gap says entries may have been missed, not that the failures seen did not happen)."""
    writer = redis.Redis.from_url(redis_url)
    for i in range(150):
        writer.xadd("log", _canary_entry(failed=i % 5 == 0))
    writer.xadd("log", {b"role": b"gap", b"deployment": b"eta", b"dropped": b"40"})
    for _ in range(120):
        writer.xadd("log", _canary_entry(failed=False))
    writer.close()
    observer = PredictionLogObserver(redis.asyncio.Redis.from_url(redis_url), "log")
    try:
        seen = await observer.observe("eta", time.time_ns() // 1000 - 600_000_000, "green", "blue")
    finally:
        await observer.close()
    assert (seen.canary.requests, seen.canary.errors) == (120, 0)  # the window since the marker
    assert (seen.canary_step.requests, seen.canary_step.errors) == (270, 30)  # what was seen in the step
    decision = _decide_as_the_loop_does(Policy(bake_seconds=60, min_requests=100, max_error_rate=0.05), seen)
    assert decision.action is Action.ROLLBACK, decision.reason
    assert decision.reason.startswith("error rate 11.11% above 5.00% at 5% over 270 requests observed")


async def test_failures_read_before_a_trim_still_roll_the_canary_back(redis_url: str) -> None:
    """A pass reads 50 canary requests, 25 failed (too few to judge); then 3,000 healthy ones are logged
    into a stream that keeps 1,000, past the window's position: the next pass restarted the window at
    the first entry left and forgot the 25 failures."""
    writer = redis.Redis.from_url(redis_url)
    for i in range(50):
        writer.xadd("log", _canary_entry(failed=i % 2 == 0))
    observer = PredictionLogObserver(redis.asyncio.Redis.from_url(redis_url), "log")
    started_us = time.time_ns() // 1000 - 600_000_000
    policy = Policy(bake_seconds=60, min_requests=100, max_error_rate=0.02)
    try:
        seen = await observer.observe("eta", started_us, "green", "blue")
        assert _decide_as_the_loop_does(policy, seen).action is Action.HOLD  # 50 of 100 requests
        pipe = writer.pipeline(transaction=True)
        for _ in range(3000):
            pipe.xadd("log", _canary_entry(failed=False), maxlen=1000, approximate=False)
        pipe.execute()
        seen = await observer.observe("eta", started_us, "green", "blue")
    finally:
        writer.close()
        await observer.close()
    assert seen.restarted_by is not None and (seen.canary.requests, seen.canary.errors) == (1000, 0)
    assert (seen.canary_step.requests, seen.canary_step.errors) == (1050, 25)
    decision = _decide_as_the_loop_does(policy, seen)
    assert decision.action is Action.ROLLBACK, decision.reason


async def test_a_log_lost_with_entries_not_yet_read_restarts_the_window_and_its_canary_bakes_again(
    redis_url: str,
) -> None:
    """A pass reads 10 healthy canary requests; 50 failures are logged, then Redis loses the stream
    (FLUSHALL, or a restart without persistence) and 100 healthy requests are logged. A stream created
    anew holds as many entries as were added to it, so the trim check saw nothing: the window joined the
    10 and the 100 as one, the failures never counted, and the canary baked on a window with a hole."""
    writer = redis.Redis.from_url(redis_url)
    observer = PredictionLogObserver(redis.asyncio.Redis.from_url(redis_url), "log")
    started_us = time.time_ns() // 1000 - 600_000_000  # baked for ten minutes already
    policy = Policy(bake_seconds=60, min_requests=100, max_error_rate=0.05)
    try:
        for _ in range(10):
            writer.xadd("log", _canary_entry(failed=False))
        seen = await observer.observe("eta", started_us, "green", "blue")
        assert seen.restarted_by is None and seen.canary.requests == 10
        for _ in range(50):
            writer.xadd("log", _canary_entry(failed=True))
        writer.flushall()
        lost_us = time.time_ns() // 1000
        for _ in range(100):
            writer.xadd("log", _canary_entry(failed=False))
        seen = await observer.observe("eta", started_us, "green", "blue")
    finally:
        writer.close()
        await observer.close()
    assert seen.restarted_by is not None and "was lost" in seen.restarted_by, seen.restarted_by
    assert seen.since_us >= lost_us // 1000 * 1000  # the bake starts again after the loss
    assert (seen.canary.requests, seen.canary.errors) == (100, 0)  # the new stream, from its start
    assert (seen.canary_step.requests, seen.canary_step.errors) == (110, 0)  # each entry read once
    decision = _decide_as_the_loop_does(policy, seen)
    assert decision.action is Action.HOLD and decision.reason.startswith("baking at 5%"), decision.reason


@pytest.mark.parametrize("recreated", [False, True], ids=["gone", "recreated-empty"])
async def test_a_log_lost_and_not_yet_written_again_restarts_the_window(
    redis_url: str, recreated: bool
) -> None:
    """The same loss seen before anything is logged again: the stream is gone, or was created empty again
    (the drift monitor's consumer group creates it, ``MKSTREAM``). Nothing shows a trim, so the window
    went on from its old position as if nothing had been lost."""
    writer = redis.Redis.from_url(redis_url)
    observer = PredictionLogObserver(redis.asyncio.Redis.from_url(redis_url), "log")
    started_us = time.time_ns() // 1000 - 600_000_000
    try:
        for _ in range(10):
            writer.xadd("log", _canary_entry(failed=False))
        await observer.observe("eta", started_us, "green", "blue")
        for _ in range(50):
            writer.xadd("log", _canary_entry(failed=True))
        writer.flushall()
        if recreated:
            writer.xgroup_create("log", "monitor", id="0", mkstream=True)
        lost_us = time.time_ns() // 1000
        seen = await observer.observe("eta", started_us, "green", "blue")
        assert seen.restarted_by is not None and "was lost" in seen.restarted_by, seen.restarted_by
        assert seen.since_us >= lost_us and seen.canary.requests == 0
        for _ in range(100):
            writer.xadd("log", _canary_entry(failed=False))
        seen = await observer.observe("eta", started_us, "green", "blue")
    finally:
        writer.close()
        await observer.close()
    assert (seen.canary.requests, seen.canary.errors) == (100, 0)
    assert (seen.canary_step.requests, seen.canary_step.errors) == (110, 0)
    assert seen.since_us >= lost_us and seen.restarted_by is not None
