"""From a training set to tensors: label encoding, the seeded held-out split, normalisation statistics.

Normalisation lives in the model (see :mod:`.model`), not in the data: the exported ONNX graph then takes
raw feature values — exactly what the data plane fetches — and imputes missing ones itself.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from clients.errors import InvalidArgument
from control_plane.training.dataset import TrainingData
from control_plane.training.trainer.config import TrainerConfig

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class PreparedData:
    """Held-out split and statistics. Features are raw (NaN = missing); ``classes`` are the label values
    in index order for classification (by value, see :func:`_encode`), empty for regression."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: FloatArray
    std: FloatArray
    classes: tuple[str, ...]
    feature_names: tuple[str, ...]

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.classes else 1


def prepare(data: TrainingData, config: TrainerConfig) -> PreparedData:
    """Features and labels of the rows that have a label, split by a permutation seeded with
    ``config.seed`` (the same rows are held out on every attempt)."""
    features = data.numpy(data.feature_columns, np.float32)
    raw_labels = data.column(config.label)
    if config.task == "classification":
        present = np.array([value is not None and value == value for value in raw_labels], dtype=bool)
        classes, codes = _encode(raw_labels[present])
        if len(classes) < 2:
            raise InvalidArgument(f"classification needs at least 2 label values, found {classes}")
        labels = torch.from_numpy(codes)
    else:
        numeric = np.asarray(raw_labels, dtype=np.float64)
        present = np.isfinite(numeric)
        classes = ()
        labels = torch.from_numpy(numeric[present].astype(np.float32)).unsqueeze(1)
    features = features[present]
    n_rows = features.shape[0]
    n_test = max(1, math.ceil(n_rows * config.holdout_fraction))
    if n_rows - n_test < 1:
        raise InvalidArgument(f"{n_rows} labelled rows: too few to hold {n_test} out and train on the rest")
    order = np.random.default_rng(config.seed).permutation(n_rows)
    test_rows, train_rows = order[:n_test], order[n_test:]
    x_train = features[train_rows]
    mean, std = _statistics(x_train)
    return PreparedData(
        x_train=torch.from_numpy(np.ascontiguousarray(x_train)),
        y_train=labels[torch.from_numpy(train_rows)],
        x_test=torch.from_numpy(np.ascontiguousarray(features[test_rows])),
        y_test=labels[torch.from_numpy(test_rows)],
        mean=mean,
        std=std,
        classes=classes,
        feature_names=data.feature_columns,
    )


def _encode(values: npt.NDArray[np.generic]) -> tuple[tuple[str, ...], npt.NDArray[np.int64]]:
    """``(class names in index order, each value's class index)``. Numbers (and booleans) are ordered by
    value, so integer labels 0..k-1 are their own indices: the monitor, the evaluation gates and the
    shadow agreement compare a prediction's argmax index with its label (a class code). Ordered as text
    ("0.0", "1.0", "10.0", "2.0", ...), index 2 meant label 10 and moved when a retraining saw an 11th
    class. Other labels (text) are ordered as text; either way the order depends on the values alone."""
    if values.dtype.kind in "biuf":  # TrainingData.column gives integers as float64
        distinct = np.unique(values)  # sorted; -0.0 and 0.0 are one value, as the metrics compare them
        codes = np.searchsorted(distinct, values).astype(np.int64)
        return tuple(str(value) for value in distinct.tolist()), codes
    text = np.array([str(value) for value in values])
    names, codes = np.unique(text, return_inverse=True)
    return tuple(names.tolist()), codes.astype(np.int64).ravel()


def _statistics(x: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Per-feature mean and std over the finite training values; a feature with no spread (or no values)
    gets std 1 and, without values, mean 0 — it then contributes a constant the first layer absorbs."""
    finite = np.where(np.isfinite(x), x, np.nan)
    with warnings.catch_warnings():  # all-NaN columns are handled below; numpy's warning is noise
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(finite, axis=0)
        std = np.nanstd(finite, axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0).astype(np.float32)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0).astype(np.float32)
    return mean, std
