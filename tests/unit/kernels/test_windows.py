"""Window aggregation kernel against brute force over the raw events (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kernels.windows import COUNT, FUNCTIONS, LAST, MAX, MEAN, MIN, SUM, WindowState, exact_sum_known

BUCKET = 10
N_BUCKETS = 6
# (column, function, window in buckets): every function, windows from one bucket to the whole ring.
AGGREGATIONS = [
    (0, COUNT, 1),
    (0, SUM, 3),
    (1, MEAN, 6),
    (1, MIN, 2),
    (0, MAX, 6),
    (1, LAST, 4),
    (0, LAST, 1),
]
AGG_COL = [a[0] for a in AGGREGATIONS]
AGG_FUNC = [a[1] for a in AGGREGATIONS]
AGG_BUCKETS = [a[2] for a in AGGREGATIONS]


def brute_force(events: list[tuple[int, int, int, float, float]]) -> list[list[float]]:
    """After each event: its entity's aggregates over the events so far whose bucket lies in the last
    ``w`` buckets up to the bucket of the entity's newest time (the documented semantics)."""
    out = []
    for i, (entity, _ts, _seq, _a, _b) in enumerate(events):
        seen = [e for e in events[: i + 1] if e[0] == entity]
        current = max(e[1] for e in seen) // BUCKET
        row = []
        for column, function, width in AGGREGATIONS:
            inside = [e for e in seen if current - width < e[1] // BUCKET <= current]
            values = [e[3 + column] for e in inside]
            if function == COUNT:
                row.append(float(len(values)))
            elif function == SUM:
                row.append(float(sum(values)))
            elif not values:
                row.append(math.nan)
            elif function == MEAN:
                row.append(sum(values) / len(values))
            elif function == MIN:
                row.append(min(values))
            elif function == MAX:
                row.append(max(values))
            else:
                row.append(max(inside, key=lambda e: (e[1], e[2]))[3 + column])
        out.append(row)
    return out


events_strategy = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.integers(0, 150),
        st.floats(-100, 100, allow_nan=False),
        st.floats(-100, 100, allow_nan=False),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(events_strategy)
def test_matches_brute_force_after_every_event(raw: list[tuple[int, int, float, float]]) -> None:
    events = [(e, ts, seq, a, b) for seq, (e, ts, a, b) in enumerate(raw)]
    state = WindowState(BUCKET, N_BUCKETS, 2, AGG_COL, AGG_FUNC, AGG_BUCKETS, capacity=1)
    arrays = np.array([[e[0], e[1], e[2]] for e in events], dtype=np.int64)
    values = np.array([[e[3], e[4]] for e in events])
    out, out_ts = state.apply(arrays[:, 0], arrays[:, 1], arrays[:, 2], values)
    expected = np.array(brute_force(events))
    np.testing.assert_allclose(out, expected, rtol=1e-9, atol=1e-9, equal_nan=True)
    newest = [max(x[1] for x in events[: i + 1] if x[0] == e[0]) for i, e in enumerate(events)]
    assert out_ts.tolist() == newest


@settings(max_examples=60, deadline=None)
@given(events_strategy, st.randoms(use_true_random=False))
def test_final_state_does_not_depend_on_arrival_order(
    raw: list[tuple[int, int, float, float]], rnd: object
) -> None:
    """Redelivered or reclaimed events are applied late: the final aggregates must not change."""
    events = [(e, ts, seq, a, b) for seq, (e, ts, a, b) in enumerate(raw)]
    shuffled = list(events)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    finals = []
    for order in (events, shuffled):
        state = WindowState(BUCKET, N_BUCKETS, 2, AGG_COL, AGG_FUNC, AGG_BUCKETS)
        arrays = np.array([[e[0], e[1], e[2]] for e in order], dtype=np.int64)
        state.apply(arrays[:, 0], arrays[:, 1], arrays[:, 2], np.array([[e[3], e[4]] for e in order]))
        finals.append(state.evaluate(sorted({e[0] for e in events})))
    np.testing.assert_allclose(finals[0], finals[1], rtol=1e-9, atol=1e-9, equal_nan=True)


def test_late_event_beyond_the_ring_is_dropped_and_state_grows() -> None:
    state = WindowState(BUCKET, N_BUCKETS, 1, [0], [COUNT], [N_BUCKETS], capacity=1)
    out, _ = state.apply(np.array([0, 5]), np.array([1000, 1000]), np.array([0, 1]), np.array([[1.0], [1.0]]))
    assert state.capacity >= 6
    late, _ = state.apply(
        np.array([0]), np.array([1000 - BUCKET * N_BUCKETS]), np.array([2]), np.array([[1.0]])
    )
    assert out[:, 0].tolist() == [1.0, 1.0] and late[0, 0] == 1.0
    assert FUNCTIONS[MEAN] == "mean" and FUNCTIONS[MAX] == "max"


@settings(max_examples=100, deadline=None)
@given(events_strategy)
def test_apply_marked_names_exactly_the_events_older_than_the_ring(
    raw: list[tuple[int, int, float, float]],
) -> None:
    """An event is marked when its bucket is at or before its entity's newest bucket so far less the
    ring (brute force); marked events are not applied: the aggregates equal those of the others."""
    events = [(e, ts, seq, a, b) for seq, (e, ts, a, b) in enumerate(raw)]
    state = WindowState(BUCKET, N_BUCKETS, 2, AGG_COL, AGG_FUNC, AGG_BUCKETS, capacity=1)
    arrays = np.array([[e[0], e[1], e[2]] for e in events], dtype=np.int64)
    values = np.array([[e[3], e[4]] for e in events])
    out, _, _, older = state.apply_marked(arrays[:, 0], arrays[:, 1], arrays[:, 2], values)
    expected_older = []
    for i, event in enumerate(events):
        before = [e[1] for e in events[:i] if e[0] == event[0]]
        expected_older.append(bool(before) and event[1] // BUCKET <= max(before) // BUCKET - N_BUCKETS)
    assert older.tolist() == expected_older
    applied = [e for e, marked in zip(events, expected_older, strict=True) if not marked]
    expected = np.array(brute_force(applied))
    np.testing.assert_allclose(out[~older], expected, rtol=1e-9, atol=1e-9, equal_nan=True)


@settings(max_examples=60, deadline=None)
@given(events_strategy)
def test_evaluate_reads_what_the_last_event_of_each_entity_emitted(
    raw: list[tuple[int, int, float, float]],
) -> None:
    events = [(e, ts, seq, a, b) for seq, (e, ts, a, b) in enumerate(raw)]
    state = WindowState(BUCKET, N_BUCKETS, 2, AGG_COL, AGG_FUNC, AGG_BUCKETS, capacity=1)
    arrays = np.array([[e[0], e[1], e[2]] for e in events], dtype=np.int64)
    out, _ = state.apply(arrays[:, 0], arrays[:, 1], arrays[:, 2], np.array([[e[3], e[4]] for e in events]))
    last_row = {e[0]: i for i, e in enumerate(events)}
    entities = sorted(last_row)
    expected = np.array(brute_force(events))[[last_row[e] for e in entities]]
    np.testing.assert_allclose(state.evaluate(entities), expected, rtol=1e-9, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(
        out[[last_row[e] for e in entities]], expected, rtol=1e-9, atol=1e-9, equal_nan=True
    )


# Whole numbers as validation admits them into an integer sum (|v| <= 2**53), weighted to the extremes,
# where float64 partial sums round and int64 totals wrap around.
whole_values = st.one_of(
    st.integers(-(2**53), 2**53),
    st.sampled_from([2**53, -(2**53), 2**53 - 1, 1, -1, 0, 5 * 10**15, 5 * 10**15 + 1, -5 * 10**15]),
)
exact_events = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 150), whole_values), min_size=1, max_size=1200
)


@settings(max_examples=150, deadline=None)
@given(exact_events)
@example([(0, 20, -5 * 10**15), (0, 0, 5 * 10**15 + 1), (0, 10, 5 * 10**15)])  # rounded and back
@example([(0, 0, 2**53)] * 1025 + [(0, 10, -(2**53))] * 2)  # past int64 (wrapped), then back in
def test_exact_sums_equal_the_exact_sum_whenever_it_fits_int64(raw: list[tuple[int, int, int]]) -> None:
    """Integer sums were the float64 sum: 2**53 + 1 came out as 2**53, and +5e15+1, +5e15, -5e15 (partial
    sums past 2**53 and back) as 5e15. The exact int64 total equals the true sum (Python integers, brute
    force) after every event whenever that fits int64, and ``exact_sum_known`` says when it does not."""
    state = WindowState(
        BUCKET, N_BUCKETS, 1, [0, 0], [SUM, SUM], [3, N_BUCKETS], capacity=1, exact_columns=[0]
    )
    entity = np.array([e[0] for e in raw], dtype=np.int64)
    ts = np.array([e[1] for e in raw], dtype=np.int64)
    values = np.array([[float(e[2])] for e in raw])
    out, _, exact = state.apply_exact(entity, ts, np.arange(len(raw)), values)
    for i, (e, _, _) in enumerate(raw):
        seen = [x for x in raw[: i + 1] if x[0] == e]
        current = max(x[1] for x in seen) // BUCKET
        for a, width in enumerate((3, N_BUCKETS)):
            true = sum(x[2] for x in seen if current - width < x[1] // BUCKET <= current)
            fits = -(2**63) <= true < 2**63
            assert bool(exact_sum_known(out[i : i + 1, a], exact[i : i + 1, a])[0]) == fits, (i, a, true)
            if fits:
                assert int(exact[i, a]) == true, (i, a, true)


def test_a_state_without_exact_columns_keeps_no_integer_sums() -> None:
    state = WindowState(BUCKET, N_BUCKETS, 1, [0], [SUM], [N_BUCKETS], capacity=4)
    assert state.isums.size == 0
    out, _, exact = state.apply_exact(
        np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64), np.array([[3.0]])
    )
    assert out[0, 0] == 3.0 and exact.shape == (0, 1)
