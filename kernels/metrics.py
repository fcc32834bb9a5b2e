"""Model quality metrics on labelled predictions: pure functions over numpy arrays.

Every function returns a Python ``float`` and returns NaN where the metric is undefined (an empty
sample, no positive prediction for precision, a single class for AUC...), never raising on such data, so
a caller can store "not computable" without special cases. Inputs must have equal lengths.

Classifiers (labels and predictions are class codes, compared exactly):

* ``accuracy = #(y_pred == y_true) / n``;
* ``precision = TP / (TP + FP)`` and ``recall = TP / (TP + FN)`` for one ``positive`` class (one
  versus the rest);
* ``roc_auc``: the probability that a random positive scores higher than a random negative, ties
  counting one half — ``Σ_{i∈pos, j∈neg} ([s_i > s_j] + ½[s_i = s_j]) / (n_pos · n_neg)`` — computed
  in O(n log n) from average ranks (the Mann–Whitney U statistic). NaN with no positive or no negative,
  or with a NaN score.

Regressors:

* ``mae = Σ|y − ŷ| / n``; ``rmse = √(Σ(y − ŷ)² / n)``;
* ``mape = Σ_{y≠0} |y − ŷ| / |y| / #(y ≠ 0)`` — a fraction, not a percentage; labels equal to 0 have no
  relative error and are left out (NaN when every label is 0).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import stats

FloatArray = npt.NDArray[np.float64]


def accuracy(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    truth, predicted = _pair(y_true, y_pred)
    if truth.shape[0] == 0:
        return float("nan")
    return float(np.count_nonzero(truth == predicted) / truth.shape[0])


def precision(y_true: npt.ArrayLike, y_pred: npt.ArrayLike, positive: float = 1) -> float:
    truth, predicted = _pair(y_true, y_pred)
    predicted_positive = predicted == positive
    flagged = int(np.count_nonzero(predicted_positive))
    if flagged == 0:
        return float("nan")
    return float(np.count_nonzero(predicted_positive & (truth == positive)) / flagged)


def recall(y_true: npt.ArrayLike, y_pred: npt.ArrayLike, positive: float = 1) -> float:
    truth, predicted = _pair(y_true, y_pred)
    actual_positive = truth == positive
    positives = int(np.count_nonzero(actual_positive))
    if positives == 0:
        return float("nan")
    return float(np.count_nonzero(actual_positive & (predicted == positive)) / positives)


def roc_auc(is_positive: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """AUC of ``scores`` for the binary truth ``is_positive`` (booleans, or 0/1)."""
    truth, score = _pair(is_positive, scores)
    positive = truth.astype(bool)
    n_pos = int(np.count_nonzero(positive))
    n_neg = truth.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0 or np.any(np.isnan(score)):
        return float("nan")
    # Average ranks make a tie count one half, exactly as in the pairwise definition.
    ranks = stats.rankdata(score, method="average")
    u = float(np.sum(ranks[positive])) - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def mae(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    truth, predicted = _pair(y_true, y_pred)
    if truth.shape[0] == 0:
        return float("nan")
    return float(np.mean(np.abs(truth - predicted)))


def rmse(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    truth, predicted = _pair(y_true, y_pred)
    if truth.shape[0] == 0:
        return float("nan")
    return float(np.sqrt(np.mean(np.square(truth - predicted))))


def mape(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    truth, predicted = _pair(y_true, y_pred)
    nonzero = truth != 0.0
    if not np.any(nonzero):
        return float("nan")
    return float(np.mean(np.abs(truth[nonzero] - predicted[nonzero]) / np.abs(truth[nonzero])))


def _pair(first: npt.ArrayLike, second: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    a = np.asarray(first, dtype=np.float64).ravel()
    b = np.asarray(second, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"samples differ in length: {a.shape[0]} and {b.shape[0]}")
    return a, b
