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
