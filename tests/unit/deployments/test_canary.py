"""The canary controller's pure decision: a failing and a slow canary roll back with the reason, a healthy
one advances step by step and is promoted, and nothing is decided on too little traffic, on part of the
window, or on entries that stopped well before the decision."""

from __future__ import annotations

import inspect
import math

import pytest

from clients.errors import InvalidArgument
from control_plane.deployments.canary import (
    MAX_BAKE_SECONDS,
    Action,
    Observation,
    Policy,
    decide,
    freshness_bound_s,
)
from tests.unit.deployments.decisions import decide_fresh

POLICY = Policy(
    steps_percent=(5.0, 25.0, 50.0, 100.0),
    bake_seconds=60,
    max_error_rate=0.02,
    max_p99_latency_ms=200.0,
    max_p99_ratio=1.5,
    min_requests=100,
)
PRIMARY = Observation(requests=2000, errors=2, p99_ms=10.0)


def test_a_failing_canary_rolls_back_at_once_with_the_reason() -> None:
    decision = decide_fresh(POLICY, 0, 5.0, Observation(150, 30, 9.0), PRIMARY)
    assert decision.action is Action.ROLLBACK
    assert decision.reason == "error rate 20.00% above 2.00% at 5% over 150 requests"


def test_a_slow_canary_rolls_back_on_the_absolute_ceiling_or_against_the_primary() -> None:
    absolute = decide_fresh(POLICY, 1, 5.0, Observation(150, 0, 450.0), PRIMARY)
    assert (
        absolute.action is Action.ROLLBACK and "p99 latency 450.00 ms above 200 ms at 25%" in absolute.reason
    )
    relative = decide_fresh(POLICY, 1, 5.0, Observation(150, 0, 40.0), PRIMARY)
    assert relative.action is Action.ROLLBACK
    assert "above 1.5x the primary's 10.00 ms" in relative.reason


def test_the_ratio_needs_enough_primary_traffic_and_floors_tiny_primary_latencies() -> None:
    few_primary = Observation(requests=10, errors=0, p99_ms=10.0)
    assert decide_fresh(POLICY, 0, 5.0, Observation(150, 0, 40.0), few_primary).action is Action.HOLD
    fast_primary = Observation(requests=2000, errors=0, p99_ms=0.2)
    assert decide_fresh(POLICY, 0, 5.0, Observation(150, 0, 0.9), fast_primary).action is Action.HOLD


def test_a_canary_slower_than_the_ratio_allows_holds_while_the_primary_is_short_of_requests() -> None:
    # Above a 50% step the primary gets fewer requests than the canary: at little traffic it stayed under
    # min_requests while the canary had them, the ratio went unjudged, and a canary four times slower
    # than its primary was promoted (there is no absolute ceiling by default).
    policy = Policy(steps_percent=(10.0, 90.0, 100.0), bake_seconds=60, max_p99_ratio=1.5, min_requests=100)
    few_primary = Observation(requests=20, errors=0, p99_ms=10.0, second_slowest_ms=10.0)
    slow = Observation(requests=180, errors=0, p99_ms=40.0, second_slowest_ms=40.0)
    held = decide_fresh(policy, 1, 60.0, slow, few_primary)
    assert held.action is Action.HOLD
    assert held.reason == (
        "waiting for primary requests at 90% to compare latency with: the canary's p99 40.00 ms is above"
        " 1.5x the primary's 10.00 ms so far, the primary has 20/100"
    )
    silent_primary = decide_fresh(policy, 1, 60.0, slow, Observation())
    assert silent_primary.action is Action.HOLD
    assert "above 1.5x the primary's n/a so far, the primary has 0/100" in silent_primary.reason
    # As fast as the primary so far: promoted as before; once the primary has min_requests, judged.
    fast = Observation(requests=180, errors=0, p99_ms=12.0, second_slowest_ms=12.0)
    assert decide_fresh(policy, 1, 60.0, fast, few_primary).action is Action.PROMOTE
    primary = Observation(requests=100, errors=0, p99_ms=10.0, second_slowest_ms=10.0)
    assert decide_fresh(policy, 1, 60.0, slow, primary).action is Action.ROLLBACK
    no_ratio = Policy(steps_percent=(10.0, 90.0, 100.0), bake_seconds=60, max_p99_ratio=0.0)
    assert decide_fresh(no_ratio, 1, 60.0, slow, few_primary).action is Action.PROMOTE  # nothing to compare


# One slow request is no latency breach: below 100 requests the p99 is the slowest request alone.

#: The end-to-end demo's policy: small steps of little traffic.
FEW_REQUESTS = Policy(
    steps_percent=(50.0, 100.0), bake_seconds=2, max_error_rate=0.05, max_p99_ratio=10.0, min_requests=20
)
FEW_PRIMARY = Observation(requests=25, errors=0, p99_ms=2.6, second_slowest_ms=2.4)


def test_one_slow_request_of_a_few_dozen_rolls_back_no_healthy_canary() -> None:
    # 22 requests of about 2 ms and one of 36.7 ms (a hiccup of a loaded host): the p99 of 22 requests is
    # their slowest, 14x the primary's, and the canary was rolled back.
    hiccup = Observation(requests=22, errors=0, p99_ms=36.7, second_slowest_ms=2.5)
    early = decide_fresh(FEW_REQUESTS, 0, 1.0, hiccup, FEW_PRIMARY)
    assert early.action is Action.HOLD, early.reason
    decision = decide_fresh(FEW_REQUESTS, 0, 2.0, hiccup, FEW_PRIMARY)
    assert decision.action is Action.PROMOTE, decision.reason  # its next step is 100 %
    assert decision.reason == (
        "healthy at 50% for 2 s: error rate 0.00%, p99 2.50 ms over 22 requests"
        " (the slowest request alone, 36.70 ms, is not judged)"
    )
    # The absolute ceiling alike.
    ceiling = Policy(steps_percent=(50.0, 100.0), bake_seconds=2, max_p99_latency_ms=20.0, min_requests=20)
    assert decide_fresh(ceiling, 0, 2.0, hiccup, FEW_PRIMARY).action is Action.PROMOTE


def test_a_single_request_observed_is_judged_by_itself() -> None:
    """With ``min_requests`` 1 a canary is decided on its first request, which has no second-slowest: it is
    judged by that request (the help and the proto said, unconditionally, that a breach needs two)."""
    one = Policy(steps_percent=(50.0, 100.0), bake_seconds=2, max_p99_latency_ms=20.0, min_requests=1)
    slow = decide_fresh(one, 0, 0.5, Observation(requests=1, errors=0, p99_ms=36.7), FEW_PRIMARY)
    assert slow.action is Action.ROLLBACK and slow.reason.startswith("p99 latency 36.70 ms above 20 ms")


def test_two_slow_requests_or_a_slow_version_roll_back_at_min_requests() -> None:
    two = Observation(requests=22, errors=0, p99_ms=36.7, second_slowest_ms=30.0)
    decision = decide_fresh(FEW_REQUESTS, 0, 1.0, two, FEW_PRIMARY)
    assert decision.action is Action.ROLLBACK
    assert decision.reason == (
        "p99 latency 30.00 ms above 10x the primary's 2.40 ms at 50% over 22 requests (the slowest request"
        " alone, 36.70 ms, is not judged)"
    )
    slow_version = Observation(requests=20, errors=0, p99_ms=41.0, second_slowest_ms=40.0)
    slow = decide_fresh(FEW_REQUESTS, 0, 0.5, slow_version, FEW_PRIMARY)
    assert slow.action is Action.ROLLBACK and slow.reason.startswith("p99 latency 40.00 ms above 10x")
    ceiling = Policy(steps_percent=(50.0, 100.0), bake_seconds=2, max_p99_latency_ms=20.0, min_requests=20)
    absolute = decide_fresh(ceiling, 0, 0.5, slow_version, FEW_PRIMARY)
    assert absolute.action is Action.ROLLBACK and absolute.reason.startswith(
        "p99 latency 40.00 ms above 20 ms"
    )


def test_the_primarys_one_slow_request_does_not_widen_the_ratio_either() -> None:
    # Like against like: the primary's p99 of 25 requests is its slowest too (a hiccup at 40 ms); judged
    # so, the canary ten times slower than the primary's usual 2.4 ms would pass as within 10x.
    hiccup_primary = Observation(requests=25, errors=0, p99_ms=40.0, second_slowest_ms=2.4)
    slow_version = Observation(requests=20, errors=0, p99_ms=31.0, second_slowest_ms=30.0)
    decision = decide_fresh(FEW_REQUESTS, 0, 0.5, slow_version, hiccup_primary)
    assert decision.action is Action.ROLLBACK
    assert "above 10x the primary's 2.40 ms" in decision.reason


def test_past_100_requests_the_p99_is_judged_as_it_is() -> None:
    # 150 requests: the p99 is the second-slowest already (two requests reach it), judged unchanged.
    slow = Observation(requests=150, errors=0, p99_ms=450.0, second_slowest_ms=460.0)
    decision = decide_fresh(POLICY, 1, 5.0, slow, PRIMARY)
    assert decision.action is Action.ROLLBACK
    assert decision.reason == "p99 latency 450.00 ms above 200 ms at 25% over 150 requests"


def test_no_decision_on_too_few_requests() -> None:
    assert decide_fresh(POLICY, 0, 5.0, Observation(99, 99, 999.0), PRIMARY).action is Action.HOLD
    waiting = decide_fresh(POLICY, 0, 120.0, Observation(40, 0, 5.0), PRIMARY)
    assert waiting.action is Action.HOLD and waiting.reason == "waiting for requests at 5%: 40/100"


def test_a_healthy_canary_bakes_then_advances_through_the_steps_and_is_promoted() -> None:
    healthy = Observation(500, 1, 11.0)
    assert decide_fresh(POLICY, 0, 30.0, healthy, PRIMARY).action is Action.HOLD
    path = []
    step = 0
    while True:
        decision = decide_fresh(POLICY, step, 61.0, healthy, PRIMARY)
        path.append((decision.action, decision.next_percent))
        if decision.action is not Action.ADVANCE:
            break
        assert decision.next_step is not None
        step = decision.next_step
    assert path == [(Action.ADVANCE, 25.0), (Action.ADVANCE, 50.0), (Action.PROMOTE, None)]


@pytest.mark.parametrize(
    "changes",
    [
        {"steps_percent": (50.0, 25.0, 100.0)},
        {"steps_percent": (5.0, 50.0)},
        {"steps_percent": ()},
        {"max_error_rate": 1.5},
        {"min_requests": 0},
        {"bake_seconds": -1},
        {"bake_seconds": MAX_BAKE_SECONDS + 1},
        {"bake_seconds": 2**63 - 1},
    ],
)
def test_bad_policies_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument):
        Policy(**changes)  # type: ignore[arg-type]


def test_a_breach_in_a_partly_read_window_rolls_back_but_health_there_does_not_advance() -> None:
    healthy = Observation(150, 0, 9.0)
    assert decide_fresh(POLICY, 0, 120.0, healthy, PRIMARY).action is Action.ADVANCE
    behind = decide_fresh(POLICY, 0, 120.0, healthy, PRIMARY, read_through=False)
    assert behind.action is Action.HOLD
    assert behind.reason == (
        "reading the prediction log at 5%: 150 canary requests read so far, more are logged"
    )
    last_step = decide_fresh(POLICY, 3, 120.0, healthy, PRIMARY, read_through=False)
    assert last_step.action is Action.HOLD  # no promotion either
    failing = decide_fresh(POLICY, 0, 120.0, Observation(150, 30, 9.0), PRIMARY, read_through=False)
    assert failing.action is Action.ROLLBACK


def test_a_canary_whose_newest_entry_is_old_is_neither_advanced_nor_promoted_but_still_rolls_back() -> None:
    """While Redis refuses the data plane's writes, the canary's entries stop arriving and no gap marker
    can say so yet: a canary baked on entries that ended long before the decision was promoted, though
    it might have been failing ever since. The bound is a quarter of the bake (15 s of 60 here), at
    least a second."""
    healthy = Observation(150, 0, 9.0)
    assert freshness_bound_s(POLICY) == 15.0
    assert freshness_bound_s(Policy(bake_seconds=2)) == 1.0
    fresh = decide(POLICY, 3, 120.0, healthy, PRIMARY, newest_canary_age_s=15.0, whole_step=None)
    assert fresh.action is Action.PROMOTE
    for step in (0, 3):
        stale = decide(POLICY, step, 120.0, healthy, PRIMARY, newest_canary_age_s=15.1, whole_step=None)
        assert stale.action is Action.HOLD
        assert stale.reason == (
            f"waiting for recent canary traffic at {POLICY.steps_percent[step]:g}%: newest entry 15.1 s old"
            " (more than 15 s; entries since may not have been logged)"
        )
    assert (
        decide(POLICY, 3, 120.0, healthy, PRIMARY, newest_canary_age_s=math.nan, whole_step=None).action
        is Action.HOLD
    )
    failing = decide(
        POLICY, 3, 120.0, Observation(150, 30, 9.0), PRIMARY, newest_canary_age_s=90.0, whole_step=None
    )
    assert failing.action is Action.ROLLBACK  # a breach needs no recent entry


def test_the_age_of_the_newest_canary_entry_has_no_default() -> None:
    # A caller that left it out decided on evidence of any age as if it were fresh.
    parameter = inspect.signature(decide).parameters["newest_canary_age_s"]
    assert parameter.default is inspect.Parameter.empty


def test_a_breach_in_everything_observed_in_the_step_rolls_back_though_the_window_restarted() -> None:
    # Since the gap: 120 healthy requests, still baking. Over the step, gap aside: 30 of 270 failed.
    since_gap, step = Observation(120, 0, 5.0), Observation(270, 30, 5.0)
    assert (
        decide(POLICY, 1, 5.0, since_gap, PRIMARY, newest_canary_age_s=0.0, whole_step=None).action
        is Action.HOLD
    )
    decision = decide(POLICY, 1, 5.0, since_gap, PRIMARY, newest_canary_age_s=0.0, whole_step=(step, PRIMARY))
    assert decision.action is Action.ROLLBACK
    assert decision.reason == (
        "error rate 11.11% above 2.00% at 25% over 270 requests observed in the step"
        " (before a gap in the prediction log too)"
    )
    # Too few requests in the step: nothing to judge there either.
    few = decide(
        POLICY,
        1,
        5.0,
        since_gap,
        PRIMARY,
        newest_canary_age_s=0.0,
        whole_step=(Observation(99, 99, 5.0), PRIMARY),
    )
    assert few.action is Action.HOLD


# Refusals as the caller's mistake (INVALID_ARGUMENT, NOT_FOUND, ...): compared between the variants.


def refusing(requests: int, refused: int, *codes: str) -> Observation:
    return Observation(requests, 0, 5.0, refused, codes or ("INVALID_ARGUMENT",))


def test_refusals_both_variants_make_alike_are_no_breach() -> None:
    # A fifth of the callers' requests name an entity with no stored features, on both variants.
    canary, primary = refusing(200, 40, "NOT_FOUND"), refusing(2000, 400, "NOT_FOUND")
    decision = decide_fresh(POLICY, 0, 60.0, canary, primary)
    assert decision.action is Action.ADVANCE, decision.reason
    assert decision.reason.endswith("; refused 20.0% as the caller's mistake (primary 20.0%)")


def test_a_canary_refusing_what_its_primary_answers_rolls_back_with_the_reason() -> None:
    # It reads a request-time feature the callers do not send yet: every request INVALID_ARGUMENT.
    decision = decide_fresh(POLICY, 2, 5.0, refusing(150, 150), refusing(2000, 0))
    assert decision.action is Action.ROLLBACK
    assert decision.reason == (
        "canary refused 100.0% of requests as the caller's mistake (INVALID_ARGUMENT) against 0.0% for"
        " the primary: more than 2.00% above it, so the canary refuses requests the primary answers"
        " at 50% over 150 requests"
    )
    # A feature view version registered but not yet filled: NOT_FOUND, on top of the callers' own.
    partly = decide_fresh(POLICY, 0, 5.0, refusing(400, 60, "NOT_FOUND", "CANCELLED"), refusing(4000, 40))
    assert partly.action is Action.ROLLBACK
    assert partly.reason.startswith(
        "canary refused 15.0% of requests as the caller's mistake (NOT_FOUND/CANCELLED) against 1.0%"
    )


def test_refusals_are_not_judged_below_min_requests_on_either_side() -> None:
    # Too few canary requests: nothing is decided.
    few = decide_fresh(POLICY, 0, 60.0, refusing(99, 99), refusing(2000, 0))
    assert few.action is Action.HOLD and few.reason == "waiting for requests at 5%: 99/100"
    # Too few primary requests: no telling the callers' mistakes from the canary's own. Rolling back
    # could punish a healthy canary, promoting could ship a broken one: it holds, and says why.
    alone = decide_fresh(POLICY, 2, 60.0, refusing(500, 500), refusing(99, 0))
    assert alone.action is Action.HOLD
    assert alone.reason == (
        "waiting for primary requests at 50% to compare refusals with: the canary refused 100.0% of 500"
        " requests as the caller's mistake (INVALID_ARGUMENT), the primary has 99/100"
    )
    # ... but only a canary that refuses more than max_error_rate: one within it needs no comparison.
    within = decide_fresh(POLICY, 2, 60.0, refusing(500, 5), refusing(99, 0))
    assert within.action is Action.PROMOTE, within.reason


def test_an_excess_within_max_error_rate_or_chance_is_no_breach() -> None:
    # 2 points more than the primary, at max_error_rate 2 %: the policy's tolerance.
    assert decide_fresh(POLICY, 0, 60.0, refusing(1000, 30), refusing(2000, 20)).action is Action.ADVANCE
    # With no tolerance (max_error_rate 0), 1 % of callers' mistakes on both: 3 of 100 canary requests
    # happen by chance (8 % of the time) and are no breach; the canary refusing all is one.
    strict = Policy(bake_seconds=60, max_error_rate=0.0, min_requests=100)
    chance = decide_fresh(strict, 0, 60.0, refusing(100, 3), refusing(2000, 20))
    assert chance.action is Action.ADVANCE, chance.reason
    assert decide_fresh(strict, 0, 60.0, refusing(100, 100), refusing(2000, 20)).action is Action.ROLLBACK


def test_refusals_in_everything_observed_in_the_step_roll_back_though_the_window_restarted() -> None:
    since_gap = refusing(120, 0)
    step = (refusing(270, 150), refusing(5000, 0))
    decision = decide(POLICY, 1, 5.0, since_gap, PRIMARY, newest_canary_age_s=0.0, whole_step=step)
    assert decision.action is Action.ROLLBACK
    assert decision.reason.startswith("canary refused 55.6% of requests as the caller's mistake")
    assert decision.reason.endswith(
        "at 25% over 270 requests observed in the step (before a gap in the prediction log too)"
    )
