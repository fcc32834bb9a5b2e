"""The autoscaler's pure decision: within bounds always, up on sustained queueing or latency, down only
after a long quiet window, and no flapping on a load that alternates every interval."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.errors import InvalidArgument
from control_plane.deployments.autoscaler import AutoscalerPolicy, Load, Recommendation, decide

POLICY = AutoscalerPolicy(
    min_replicas=1,
    max_replicas=6,
    target_queue_per_replica=10,
    target_p99_ms=50,
    interval_s=30,
    up_window_s=60,
    down_window_s=300,
    max_step_up=2,
)


def simulate(loads: list[tuple[float, float | None]], replicas: int = 1) -> list[int]:
    history: tuple[Recommendation, ...] = ()
    counts = []
    for tick, (queue, p99) in enumerate(loads):
        replicas, history = decide(POLICY, Load(replicas, queue, p99), history, tick * POLICY.interval_s)
        counts.append(replicas)
    return counts


def test_sustained_queueing_scales_up_after_the_up_window_in_bounded_steps() -> None:
    counts = simulate([(55.0, 20.0)] * 6)
    assert counts == [1, 1, 3, 5, 6, 6]  # waits out 60 s, then +2 per decision, capped at max


def test_latency_alone_scales_up() -> None:
    assert simulate([(0.0, 120.0)] * 3, replicas=2) == [2, 2, 4]  # wants 2 x 120/50 -> 5; +2 at most


def test_scales_down_only_after_a_quiet_down_window() -> None:
    counts = simulate([(5.0, 10.0)] * 12, replicas=4)
    assert counts[:10] == [4] * 10 and counts[10:] == [1, 1]  # 300 s of quiet first


def test_an_alternating_load_does_not_flap() -> None:
    counts = simulate([(80.0, 30.0), (0.0, 5.0)] * 10, replicas=3)
    changes = sum(a != b for a, b in itertools.pairwise(counts))
    assert changes == 0 and counts[-1] == 3


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1000), st.one_of(st.none(), st.floats(0, 5000))), max_size=30))
def test_always_within_bounds(loads: list[tuple[float, float | None]]) -> None:
    assert all(1 <= c <= 6 for c in simulate(loads))


@pytest.mark.parametrize("field", ["up_window_s", "down_window_s"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0])
def test_a_window_that_is_not_a_finite_number_at_least_zero_is_refused(field: str, value: float) -> None:
    # A NaN window passed `< 0` and then made every decision raise (min() of an empty window).
    with pytest.raises(
        InvalidArgument, match=f"autoscaler {field} must be a finite number >= 0, not {value}"
    ):
        AutoscalerPolicy(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["target_queue_per_replica", "target_p99_ms", "interval_s"])
@pytest.mark.parametrize("value", [math.nan, math.inf, 0.0])
def test_a_target_that_is_not_finite_and_positive_is_refused(field: str, value: float) -> None:
    with pytest.raises(InvalidArgument, match=f"autoscaler {field} must be positive"):
        AutoscalerPolicy(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("reading", [math.nan, math.inf])
def test_a_non_finite_reading_counts_as_missing(reading: float) -> None:
    history: tuple[Recommendation, ...] = ()
    for tick in range(4):  # a queue reading, then a latency reading, that is not a number: no decision fails
        now = tick * POLICY.interval_s
        assert decide(POLICY, Load(2, reading, 10.0), history, now)[0] == 2
        replicas, history = decide(POLICY, Load(2, 15.0, reading), history, now)
        assert replicas == 2


def test_an_interval_with_an_unmeasured_replica_never_scales_down_but_may_scale_up() -> None:
    quick = AutoscalerPolicy(min_replicas=1, max_replicas=6, up_window_s=0, down_window_s=0)
    assert decide(quick, Load(3, 0.0, None, unmeasured=1), (), 0.0)[0] == 3
    assert decide(quick, Load(3, 0.0, None), (), 0.0)[0] == 1
    assert decide(quick, Load(3, 80.0, None, unmeasured=1), (), 0.0)[0] == 5  # the others' queue: up
