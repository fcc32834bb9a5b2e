"""Held-out metrics: RMSE and MAE for regression; accuracy, ROC AUC and log loss for classification.

AUC is the Mann–Whitney statistic with average ranks for ties (what ``sklearn.metrics.roc_auc_score``
computes); with more than two classes it is the unweighted mean of the one-vs-rest AUCs of the classes
present in the held-out labels. A metric that is undefined (AUC when the held-out set has one class) is
left out rather than reported as NaN (the registry accepts only finite metrics).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

#: Probabilities are clipped to [EPS, 1 - EPS] in the log loss so one confident mistake stays finite.
LOGLOSS_EPS = 1e-15


def regression_metrics(predicted: npt.ArrayLike, actual: npt.ArrayLike) -> dict[str, float]:
    error = np.asarray(predicted, np.float64).ravel() - np.asarray(actual, np.float64).ravel()
    return {"rmse": float(np.sqrt(np.mean(error * error))), "mae": float(np.mean(np.abs(error)))}


def classification_metrics(probabilities: npt.ArrayLike, labels: npt.ArrayLike) -> dict[str, float]:
    """``probabilities`` ``[rows, classes]`` (rows sum to 1), ``labels`` class indices."""
    probs = np.asarray(probabilities, np.float64)
    truth = np.asarray(labels, np.int64).ravel()
    rows = np.arange(truth.shape[0])
    metrics = {
        "accuracy": float(np.mean(np.argmax(probs, axis=1) == truth)),
        "logloss": float(-np.mean(np.log(np.clip(probs[rows, truth], LOGLOSS_EPS, 1 - LOGLOSS_EPS)))),
    }
    auc = multiclass_auc(probs, truth)
    if math.isfinite(auc):
        metrics["auc"] = auc
    return metrics


def binary_auc(scores: npt.ArrayLike, positive: npt.ArrayLike) -> float:
    """ROC AUC of ``scores`` for the boolean ``positive``; NaN when either class is absent."""
    values = np.asarray(scores, np.float64).ravel()
    is_positive = np.asarray(positive, bool).ravel()
    n_pos = int(is_positive.sum())
    n_neg = is_positive.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(values)  # average ranks for ties
    return float((ranks[is_positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def multiclass_auc(probabilities: npt.NDArray[np.float64], labels: npt.NDArray[np.int64]) -> float:
    if probabilities.shape[1] == 2:
        return binary_auc(probabilities[:, 1], labels == 1)
    aucs = [binary_auc(probabilities[:, c], labels == c) for c in range(probabilities.shape[1])]
    finite = [auc for auc in aucs if math.isfinite(auc)]
    return float(np.mean(finite)) if finite else math.nan
