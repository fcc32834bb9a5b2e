"""Quality metrics against brute-force formulas written out with plain Python loops."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.metrics import accuracy, mae, mape, precision, recall, rmse, roc_auc

classes = st.integers(min_value=0, max_value=2)
labelled = st.lists(st.tuples(classes, classes), min_size=0, max_size=60)
small_floats = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False).map(lambda v: round(v, 2))
regression = st.lists(st.tuples(small_floats, small_floats), min_size=0, max_size=60)


def _same(actual: float, expected: float) -> bool:
    if math.isnan(expected):
        return math.isnan(actual)
    return math.isclose(actual, expected, rel_tol=1e-12, abs_tol=1e-12)


@settings(max_examples=150, deadline=None)
@given(labelled, classes)
def test_classification_metrics_equal_their_counting_definitions(
    pairs: list[tuple[int, int]], positive: int
) -> None:
    truth = [t for t, _ in pairs]
    pred = [p for _, p in pairs]
    tp = sum(1 for t, p in pairs if t == positive and p == positive)
    fp = sum(1 for t, p in pairs if t != positive and p == positive)
    fn = sum(1 for t, p in pairs if t == positive and p != positive)
    correct = sum(1 for t, p in pairs if t == p)
    assert _same(accuracy(truth, pred), correct / len(pairs) if pairs else math.nan)
    assert _same(precision(truth, pred, positive), tp / (tp + fp) if tp + fp else math.nan)
    assert _same(recall(truth, pred, positive), tp / (tp + fn) if tp + fn else math.nan)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=6)), min_size=0, max_size=50))
def test_auc_equals_the_pairwise_probability_with_ties_counting_half(pairs: list[tuple[bool, int]]) -> None:
    # Scores drawn from few values, so ties are frequent.
    positives = [s / 6 for y, s in pairs if y]
    negatives = [s / 6 for y, s in pairs if not y]
    if positives and negatives:
        wins = sum((1.0 if p > n else 0.5 if p == n else 0.0) for p in positives for n in negatives)
        expected = wins / (len(positives) * len(negatives))
    else:
        expected = math.nan
    actual = roc_auc([y for y, _ in pairs], [s / 6 for _, s in pairs])
    assert _same(actual, expected)


@settings(max_examples=150, deadline=None)
@given(regression)
def test_regression_metrics_equal_their_sums(pairs: list[tuple[float, float]]) -> None:
    truth = [t for t, _ in pairs]
    pred = [p for _, p in pairs]
    n = len(pairs)
    expected_mae = sum(abs(t - p) for t, p in pairs) / n if n else math.nan
    expected_rmse = math.sqrt(sum((t - p) ** 2 for t, p in pairs) / n) if n else math.nan
    relative = [abs(t - p) / abs(t) for t, p in pairs if t != 0]
    expected_mape = sum(relative) / len(relative) if relative else math.nan
    assert math.isclose(mae(truth, pred), expected_mae, rel_tol=1e-9) or _same(mae(truth, pred), expected_mae)
    assert math.isclose(rmse(truth, pred), expected_rmse, rel_tol=1e-9) or _same(
        rmse(truth, pred), expected_rmse
    )
    assert math.isclose(mape(truth, pred), expected_mape, rel_tol=1e-9) or _same(
        mape(truth, pred), expected_mape
    )


def test_perfect_and_inverted_rankings_give_auc_one_and_zero() -> None:
    truth = np.array([0, 0, 1, 1])
    assert roc_auc(truth, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc(truth, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert math.isnan(roc_auc(truth, [0.1, float("nan"), 0.8, 0.9]))


def test_unequal_lengths_are_refused() -> None:
    try:
        accuracy([1, 2], [1])
    except ValueError as error:
        assert "differ in length" in str(error)
    else:
        raise AssertionError("unequal lengths were accepted")
