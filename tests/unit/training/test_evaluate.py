"""Held-out metrics against brute-force definitions (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.training.trainer.evaluate import (
    binary_auc,
    classification_metrics,
    multiclass_auc,
    regression_metrics,
)

small_scores = st.lists(st.integers(0, 5).map(float), min_size=1, max_size=40)  # ties on purpose


def brute_force_auc(scores: list[float], positive: list[bool]) -> float:
    """P(score of a random positive > score of a random negative), ties counting one half."""
    pos = [s for s, p in zip(scores, positive, strict=True) if p]
    neg = [s for s, p in zip(scores, positive, strict=True) if not p]
    if not pos or not neg:
        return math.nan
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_binary_auc_is_the_pairwise_probability(data: st.DataObject) -> None:
    scores = data.draw(small_scores)
    positive = data.draw(st.lists(st.booleans(), min_size=len(scores), max_size=len(scores)))
    expected = brute_force_auc(scores, positive)
    actual = binary_auc(scores, positive)
    assert (math.isnan(expected) and math.isnan(actual)) or math.isclose(actual, expected, abs_tol=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_multiclass_auc_is_the_mean_one_vs_rest(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 30))
    probs = np.array(
        data.draw(st.lists(st.lists(st.integers(1, 4), min_size=3, max_size=3), min_size=n, max_size=n)),
        float,
    )
    probs /= probs.sum(axis=1, keepdims=True)
    labels = np.array(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)))
    per_class = [brute_force_auc(probs[:, c].tolist(), (labels == c).tolist()) for c in range(3)]
    finite = [a for a in per_class if not math.isnan(a)]
    actual = multiclass_auc(probs, labels)
    if finite:
        assert math.isclose(actual, sum(finite) / len(finite), abs_tol=1e-12)
    else:
        assert math.isnan(actual)


@given(st.lists(st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3)), min_size=1, max_size=50))
def test_regression_metrics(pairs: list[tuple[float, float]]) -> None:
    predicted, actual = zip(*pairs, strict=True)
    metrics = regression_metrics(predicted, actual)
    errors = [p - a for p, a in pairs]
    assert math.isclose(metrics["mae"], sum(abs(e) for e in errors) / len(errors), rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(
        metrics["rmse"], math.sqrt(sum(e * e for e in errors) / len(errors)), rel_tol=1e-9, abs_tol=1e-9
    )


def test_classification_metrics_and_an_undefined_auc_left_out() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.0, 1.0]])
    metrics = classification_metrics(probs, np.array([0, 1, 1, 0]))
    assert metrics["accuracy"] == 0.5
    expected_logloss = -(math.log(0.9) + math.log(0.8) + math.log(0.4) + math.log(1e-15)) / 4
    assert math.isclose(metrics["logloss"], expected_logloss, rel_tol=1e-9)  # clipped: finite
    assert metrics["auc"] == brute_force_auc([0.1, 0.8, 0.4, 1.0], [False, True, True, False])
    assert "auc" not in classification_metrics(probs, np.array([1, 1, 1, 1]))  # one class: undefined
