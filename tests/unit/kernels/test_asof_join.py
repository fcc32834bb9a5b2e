"""The point-in-time join against a brute-force O(n·m) reference, plus the cases that break joins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.asof_join import (
    NO_MATCH,
    asof_finalize,
    asof_indices,
    asof_update,
    gather_partition,
    gather_rows,
    index_labels,
    new_state,
)

Int64Array = npt.NDArray[np.int64]


@dataclass
class Case:
    label_entity: Int64Array
    label_ts: Int64Array
    feat_entity: Int64Array
    feat_ts: Int64Array
    feat_ingest: Int64Array
    ttl_us: int


def brute_force(case: Case) -> Int64Array:
    """The definition, spelled out: latest event time <= label time, then latest ingestion, then the
    larger row index; older than the TTL -> null."""
    out = np.full(case.label_ts.shape[0], NO_MATCH, dtype=np.int64)
    for i, (entity, label_ts) in enumerate(zip(case.label_entity, case.label_ts, strict=True)):
        best: tuple[int, int, int] | None = None
        for j in range(case.feat_ts.shape[0]):
            if case.feat_entity[j] == entity and case.feat_ts[j] <= label_ts:
                key = (int(case.feat_ts[j]), int(case.feat_ingest[j]), j)
                best = key if best is None or key > best else best
        if best is not None and not (case.ttl_us > 0 and label_ts - best[0] > case.ttl_us):
            out[i] = best[2]
    return out


# Few entities and a narrow time range force ties, duplicates and shared timestamps; the wide pool
# (ids near ±2**62) exercises the sparse entity lookup and the overflow guards.
_SMALL_IDS = st.integers(0, 5)
_WIDE_IDS = st.sampled_from([-(2**62), -7, 0, 3, 2**40, 2**62])


@st.composite
def cases(draw: st.DrawFn) -> Case:
    ids = draw(st.sampled_from([_SMALL_IDS, _WIDE_IDS]))
    ts = st.integers(-20, 20)
    n = draw(st.integers(0, 25))
    m = draw(st.integers(0, 50))
    return Case(
        label_entity=np.array(draw(st.lists(ids, min_size=n, max_size=n)), dtype=np.int64),
        label_ts=np.array(draw(st.lists(ts, min_size=n, max_size=n)), dtype=np.int64),
        feat_entity=np.array(draw(st.lists(ids, min_size=m, max_size=m)), dtype=np.int64),
        feat_ts=np.array(draw(st.lists(ts, min_size=m, max_size=m)), dtype=np.int64),
        feat_ingest=np.array(draw(st.lists(st.integers(0, 3), min_size=m, max_size=m)), dtype=np.int64),
        ttl_us=draw(st.sampled_from([0, -1, 1, 3, 10])),
    )


def join(case: Case) -> Int64Array:
    return asof_indices(
        case.label_entity, case.label_ts, case.feat_entity, case.feat_ts, case.feat_ingest, case.ttl_us
    )


@settings(max_examples=300, deadline=None)
@given(cases())
def test_matches_brute_force(case: Case) -> None:
    np.testing.assert_array_equal(join(case), brute_force(case))


@settings(max_examples=150, deadline=None)
@given(cases(), st.data())
def test_partitioned_incremental_equals_one_shot(case: Case, data: st.DataObject) -> None:
    """Feature rows split into partitions fed one at a time, in any order, give the one-shot indices,
    and gathering values partition by partition gives the one-shot values and mask."""
    m = case.feat_ts.shape[0]
    cuts = sorted(data.draw(st.lists(st.integers(0, m), max_size=5)))
    bounds = list(zip([0, *cuts], [*cuts, m], strict=True))
    feeding_order = data.draw(st.permutations(range(len(bounds))))
    values = np.arange(m * 2, dtype=np.int32).reshape(m, 2) * 7 + 1

    state = new_state(index_labels(case.label_entity, case.label_ts))
    for p in feeding_order:
        lo, hi = bounds[p]
        asof_update(
            state, case.feat_entity[lo:hi], case.feat_ts[lo:hi], case.feat_ingest[lo:hi], row_offset=lo
        )
    indices = asof_finalize(state, case.ttl_us)
    np.testing.assert_array_equal(indices, join(case))

    out = np.zeros((indices.shape[0], 2), dtype=values.dtype)
    valid = np.zeros(indices.shape[0], dtype=np.bool_)
    for lo, hi in bounds:
        gather_partition(values[lo:hi], indices, lo, out, valid)
    expected_out, expected_valid = gather_rows(values, indices)
    np.testing.assert_array_equal(out, expected_out)
    np.testing.assert_array_equal(valid, expected_valid)


@settings(max_examples=200, deadline=None)
@given(cases())
def test_no_leakage_future_value_never_returned(case: Case) -> None:
    """For every label, plant a row of its entity 1 µs after its time, carrying a value that names the
    label and the highest ingestion time of all. No label may ever receive its own future value, and no
    label any row later than itself."""
    n = case.label_ts.shape[0]
    m = case.feat_ts.shape[0]
    planted = Case(
        label_entity=case.label_entity,
        label_ts=case.label_ts,
        feat_entity=np.concatenate([case.feat_entity, case.label_entity]),
        feat_ts=np.concatenate([case.feat_ts, case.label_ts + 1]),
        feat_ingest=np.concatenate([case.feat_ingest, np.full(n, 10**6, dtype=np.int64)]),
        ttl_us=case.ttl_us,
    )
    future_value_of_label = -1000.5 - np.arange(n)
    values = np.concatenate([np.arange(m, dtype=np.float64), future_value_of_label])

    indices = join(planted)
    joined, valid = gather_rows(values, indices)
    assert not np.any(valid & (joined == future_value_of_label))
    matched = indices[valid]
    assert np.all(planted.feat_ts[matched] <= case.label_ts[valid])
    np.testing.assert_array_equal(indices, brute_force(planted))


@settings(max_examples=40, deadline=None)
@given(
    run=st.integers(33, 300),
    seed=st.integers(0, 2**32 - 1),
    spread=st.sampled_from([5, 1_000]),
)
def test_long_label_runs_of_one_entity_match_brute_force(run: int, seed: int, spread: int) -> None:
    """Entities with more labels than the label index sorts by insertion (a merge sort takes over), next
    to short runs, with tied timestamps when the spread is small."""
    rng = np.random.default_rng(seed)
    label_entity = np.concatenate([np.zeros(run, dtype=np.int64), rng.integers(1, 4, 20)])
    case = Case(
        label_entity=rng.permutation(label_entity),
        label_ts=rng.integers(0, spread, size=len(label_entity), dtype=np.int64),
        feat_entity=rng.integers(0, 4, 200),
        feat_ts=rng.integers(0, spread, 200),
        feat_ingest=rng.integers(0, 3, 200),
        ttl_us=int(rng.choice([0, spread // 5 + 1])),
    )
    labels = index_labels(case.label_entity, case.label_ts)
    assert np.all(np.diff(labels.sorted_ts[labels.run_starts[0] : labels.run_starts[1]]) >= 0)
    np.testing.assert_array_equal(join(case), brute_force(case))


def test_ties_on_event_time_go_to_latest_ingestion_then_larger_row() -> None:
    entity = np.zeros(4, dtype=np.int64)
    ts = np.array([5, 5, 5, 5], dtype=np.int64)
    ingest = np.array([1, 9, 3, 9], dtype=np.int64)  # rows 1 and 3 tie on ingestion too
    assert asof_indices([0], [5], entity, ts, ingest).tolist() == [3]
    assert asof_indices([0], [5], entity[:3], ts[:3], ingest[:3]).tolist() == [1]


def test_exact_duplicates_resolve_to_the_larger_row_index() -> None:
    entity = np.array([7, 7, 7], dtype=np.int64)
    ts = np.array([3, 3, 3], dtype=np.int64)
    ingest = np.array([2, 2, 2], dtype=np.int64)
    assert asof_indices([7, 7], [3, 100], entity, ts, ingest).tolist() == [2, 2]


def test_ttl_is_inclusive_at_exactly_ttl_and_null_one_microsecond_later() -> None:
    feat = ([1], [1_000], [1_000])
    assert asof_indices([1, 1], [1_500, 1_501], *feat, ttl_us=500).tolist() == [0, NO_MATCH]
    assert asof_indices([1, 1], [1_500, 1_501], *feat, ttl_us=0).tolist() == [0, 0]


def test_an_expired_winner_is_not_replaced_by_an_older_row() -> None:
    # The latest row is too old; an even older row must not step in.
    assert asof_indices([1], [100], [1, 1], [10, 50], [0, 0], ttl_us=20).tolist() == [NO_MATCH]


def test_late_arriving_row_counts_by_event_time() -> None:
    """A row whose event time is before the label but which was ingested after it is eligible: the
    offline store answers "what was the value at that moment", and ingestion time only breaks ties."""
    label_ts = 1_000
    indices = asof_indices([4], [label_ts], [4, 4], [900, 990], [905, label_ts + 10_000])
    assert indices.tolist() == [1]


def test_missing_entities_and_rows_only_in_the_future_are_null() -> None:
    indices = asof_indices([1, 2, 3], [10, 10, 10], [2, 3], [11, 10], [0, 0])
    assert indices.tolist() == [NO_MATCH, NO_MATCH, 1]


def test_results_come_back_in_the_original_label_order() -> None:
    label_entity = np.array([2, 1, 2, 1], dtype=np.int64)
    label_ts = np.array([30, 30, 10, 10], dtype=np.int64)
    feat_entity = np.array([1, 2, 1, 2], dtype=np.int64)
    feat_ts = np.array([5, 5, 25, 25], dtype=np.int64)
    indices = asof_indices(label_entity, label_ts, feat_entity, feat_ts, np.zeros(4, dtype=np.int64))
    assert indices.tolist() == [3, 2, 1, 0]


@pytest.mark.parametrize("split", ["rows", "entities"])
def test_threaded_join_equals_single_threaded_on_many_entities(split: Literal["rows", "entities"]) -> None:
    rng = np.random.default_rng(3)
    n, m, entities = 60_000, 200_000, 40_000
    label_entity = rng.integers(0, entities, n)
    label_ts = rng.integers(0, 10_000, n)
    # Few distinct times and ingestion times: many exact ties, decided by row index across threads.
    feat = (rng.integers(0, entities, m), rng.integers(0, 10_000, m), rng.integers(0, 5, m))
    labels = index_labels(label_entity, label_ts)
    results = []
    for threads in (1, 2, 3):
        state = new_state(labels)
        asof_update(state, *feat, threads=threads, split=split)
        results.append(asof_finalize(state, ttl_us=500))
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])
    assert 0 < np.count_nonzero(results[0] == NO_MATCH) < n  # both outcomes occur
    # Two partitions (row offsets), each folded by 3 threads, give the one-shot answer too.
    state = new_state(labels)
    half = m // 2
    asof_update(state, *(c[half:] for c in feat), row_offset=half, threads=3, split=split)
    asof_update(state, *(c[:half] for c in feat), row_offset=0, threads=3, split=split)
    np.testing.assert_array_equal(asof_finalize(state, ttl_us=500), results[0])


def test_gather_keeps_integer_dtype_and_reports_nulls_in_a_mask() -> None:
    values = np.array([[10, 11], [20, 21], [30, 31]], dtype=np.int16)
    out, valid = gather_rows(values, np.array([2, NO_MATCH, 0], dtype=np.int64), threads=1)
    assert out.dtype == np.int16
    assert valid.tolist() == [True, False, True]
    assert out[valid].tolist() == [[30, 31], [10, 11]]
    assert out[1].tolist() == [0, 0]


def test_gather_handles_one_dimensional_values() -> None:
    out, valid = gather_rows(np.array([1.5, 2.5]), np.array([1, 1, NO_MATCH], dtype=np.int64))
    assert out.tolist() == [2.5, 2.5, 0.0]
    assert valid.tolist() == [True, True, False]


def test_float_timestamps_are_refused() -> None:
    with pytest.raises(TypeError, match="feat_ts must hold integers"):
        asof_indices([1], [1], [1], np.array([1.0]), [1])


def test_columns_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        asof_indices([1], [1], [1, 2], [1], [1, 1])
    with pytest.raises(ValueError, match="label_entity has 2 rows"):
        asof_indices([1, 2], [1], [1], [1], [1])


def test_gather_refuses_a_mismatched_output() -> None:
    values = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="out is float64"):
        gather_partition(values, np.zeros(2, dtype=np.int64), 0, np.zeros((2, 2)), np.zeros(2, dtype=bool))
