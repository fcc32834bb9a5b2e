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


# A brute-force reading of the documented rules (the module's docstring, docs/architecture.md), against
# which decide() is checked on random policies, loads and irregular decision times (a tick that starts
# replicas takes longer than the interval): every recommendation ever made is kept, and a window is
# covered once the first recommendation is at least that old and one recommendation lies in it.


def reference_recommendation(policy: AutoscalerPolicy, load: Load) -> int:
    queue = load.queue_depth if math.isfinite(load.queue_depth) else 0.0
    wanted = [policy.min_replicas, math.ceil(queue / policy.target_queue_per_replica)]
    if load.p99_ms is not None and math.isfinite(load.p99_ms):
        wanted.append(math.ceil(max(load.replicas, 1) * load.p99_ms / policy.target_p99_ms))
    if load.unmeasured:
        wanted.append(load.replicas)  # what was not seen may be busy: never fewer than run
    return min(max(wanted), policy.max_replicas)


def reference_decision(
    policy: AutoscalerPolicy, current: int, made: list[tuple[float, int]], now: float
) -> int:
    keep_s = max(policy.up_window_s, policy.down_window_s) + policy.interval_s
    kept = [(at, r) for at, r in made if now - at <= keep_s]
    oldest = kept[0][0]

    def window(seconds: float) -> list[int] | None:
        return None if oldest > now - seconds else [r for at, r in kept if now - at <= seconds]

    up, down = window(policy.up_window_s), window(policy.down_window_s)
    wanted = current
    if up and min(up) > current:
        wanted = min(min(up), current + policy.max_step_up)
    elif down and max(down) < current:
        wanted = max(down)
    return min(max(wanted, policy.min_replicas), policy.max_replicas)


policies = st.builds(
    lambda low, extra, interval, up, down, step, queue, p99: AutoscalerPolicy(
        min_replicas=low,
        max_replicas=low + extra,
        interval_s=interval,
        up_window_s=up,
        down_window_s=down,
        max_step_up=step,
        target_queue_per_replica=queue,
        target_p99_ms=p99,
    ),
    st.integers(1, 4),
    st.integers(0, 6),
    st.sampled_from([1.0, 10.0, 30.0]),
    st.sampled_from([0.0, 15.0, 60.0, 90.0]),
    st.sampled_from([0.0, 30.0, 120.0, 300.0]),
    st.integers(1, 3),
    st.sampled_from([1.0, 16.0]),
    st.sampled_from([10.0, 50.0]),
)
ticks = st.lists(
    st.tuples(
        st.one_of(st.floats(0, 2000), st.just(math.nan)),  # queue depth
        st.one_of(st.none(), st.floats(0, 500), st.just(math.inf)),  # p99
        st.integers(0, 2),  # replicas not measured
        st.floats(0.0, 2.5),  # the pause before the tick, in intervals
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(policies, ticks, st.integers(1, 10))
def test_decisions_follow_the_documented_rules(
    policy: AutoscalerPolicy, loads: list[tuple[float, float | None, int, float]], start: int
) -> None:
    history: tuple[Recommendation, ...] = ()
    made: list[tuple[float, int]] = []
    current, now = start, 0.0
    last_up = last_down = -math.inf
    for queue, p99, unmeasured, pause in loads:
        now += pause * policy.interval_s
        load = Load(current, queue, p99, unmeasured=min(unmeasured, current))
        made.append((now, reference_recommendation(policy, load)))
        wanted, history = decide(policy, load, history, now)
        assert wanted == reference_decision(policy, current, made, now)
        assert policy.min_replicas <= wanted <= policy.max_replicas
        if current >= policy.min_replicas:
            assert wanted <= max(current + policy.max_step_up, policy.min_replicas)
            if load.unmeasured:
                assert wanted >= min(current, policy.max_replicas), "scaled down on a load not read"
            # No flapping: a scale-up's recommendation stays in the down window, and a scale-down's in
            # the up window, so the count does not turn back before that window has passed.
            if wanted < current:
                assert now - last_up > policy.down_window_s
            if wanted > current:
                assert now - last_down > policy.up_window_s
        if wanted > current:
            last_up = now
        elif wanted < current:
            last_down = now
        current = wanted
