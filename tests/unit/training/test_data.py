"""From a training set to tensors: unlabelled rows dropped, a seeded split, statistics over finite
values, class labels in order of value (text for text labels)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pytest
import torch

from clients.errors import FailedPrecondition, InvalidArgument
from control_plane.model_registry.validation import NAME_PATTERN
from control_plane.training.dataset import TrainingData
from control_plane.training.spec import Hyperparameters
from control_plane.training.trainer.config import TrainerConfig, model_name_from
from control_plane.training.trainer.data import prepare

FEATURES = ("v@1:a", "v@1:b")


def training_data(labels: Sequence[object]) -> TrainingData:
    n = len(labels)
    table = pa.table(
        {
            "id": pa.array(range(n)),
            "v@1:a": pa.array([float(i) for i in range(n)]),
            "v@1:b": pa.array([None if i % 4 == 0 else 10.0 for i in range(n)], pa.float64()),
            "label": pa.array(labels),
        }
    )
    return TrainingData(table, "h" * 64, "{}", FEATURES, FEATURES)


def test_regression_split_is_seeded_and_drops_unlabelled_rows() -> None:
    labels: list[object] = [float(i) if i % 10 else None for i in range(40)]
    config = TrainerConfig(task="regression", label="label", seed=5, holdout_fraction=0.25)
    first, again = prepare(training_data(labels), config), prepare(training_data(labels), config)
    assert first.x_train.shape == (27, 2) and first.x_test.shape == (9, 2)  # 36 labelled rows
    torch.testing.assert_close(first.x_test, again.x_test, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(first.y_train, again.y_train)
    other = prepare(training_data(labels), TrainerConfig(task="regression", label="label", seed=6))
    assert not torch.equal(first.x_test[:, 0], other.x_test[:, 0])
    # The label is the row number here, and so is feature a: rows stay aligned through the split.
    assert torch.equal(first.x_train[:, 0:1], first.y_train)
    assert first.std[1] == 1.0 and first.mean[1] == 10.0  # b: constant where present -> std 1, NaN ignored
    assert first.n_outputs == 1 and first.classes == ()


def test_classification_labels_become_sorted_class_indices() -> None:
    labels = ["yes", "no", None, "maybe"] * 5
    prepared = prepare(training_data(labels), TrainerConfig(task="classification", label="label"))
    assert prepared.classes == ("maybe", "no", "yes") and prepared.n_outputs == 3
    assert prepared.x_train.shape[0] + prepared.x_test.shape[0] == 15
    assert set(torch.cat([prepared.y_train, prepared.y_test]).tolist()) == {0, 1, 2}
    with pytest.raises(InvalidArgument, match="at least 2"):
        prepare(training_data(["yes"] * 6), TrainerConfig(task="classification", label="label"))


def test_numeric_class_labels_are_ordered_by_value_so_labels_0_to_k_are_their_own_codes() -> None:
    # Sorted as text ("0.0", "1.0", "10.0", "11.0", "2.0", ...), output 2 meant label 10: the monitor, the
    # gates and the shadow agreement read the argmax index as the label, so a perfect model of 12 classes
    # scored 1/6, and the index of a class moved when a retraining saw an 11th class.
    config = TrainerConfig(task="classification", label="label")
    for k in (10, 12):
        labels = [i % k for i in range(6 * k)]
        prepared = prepare(training_data(labels), config)
        assert prepared.classes == tuple(str(float(c)) for c in range(k))
        assert prepared.n_outputs == k
        # Each row's class index is its label (feature a is the row number).
        rows = torch.cat([prepared.x_train[:, 0], prepared.x_test[:, 0]]).long()
        codes = torch.cat([prepared.y_train, prepared.y_test])
        assert torch.equal(codes, rows % k)
    signed = prepare(training_data([2.5, -1.0, 10.0, -0.0, 0.0, None] * 4), config)
    assert signed.classes == ("-1.0", "0.0", "2.5", "10.0")  # -0.0 and 0.0: one class, as equal labels


def test_missing_label_column_and_bad_settings_are_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="no column 'nope'"):
        prepare(training_data([1.0] * 10), TrainerConfig(task="regression", label="nope"))
    with pytest.raises(InvalidArgument, match="task"):
        TrainerConfig(task="ranking", label="y").check()


@pytest.mark.parametrize(
    ("hyperparameter", "value", "message"),
    [
        ("seed", "-1", r"'seed' must be >= 0 and <= 2\*\*64 - 1, got -1"),
        ("seed", str(2**64), r"'seed' must be >= 0"),
        ("weight_decay", "-0.1", "'weight_decay' must be >= 0, got -0.1"),
        ("weight_decay", "nan", "'weight_decay' must be a finite number, got nan"),
        ("lr_gamma", "0", "'lr_gamma' must be > 0, got 0.0"),
        ("lr_gamma", "inf", "'lr_gamma' must be a finite number"),
        ("lr", "nan", "'lr' must be a finite number"),
        ("onnx_tolerance", "nan", "'onnx_tolerance' must be a finite number"),
        ("eval_every", "-1", "'eval_every' must be >= 0, got -1"),
    ],
)
def test_hyperparameters_training_would_crash_on_are_refused_by_name(
    hyperparameter: str, value: str, message: str
) -> None:
    # They passed the check, then failed every attempt in torch or numpy with an error naming nothing.
    with pytest.raises(InvalidArgument, match=f"hyperparameter {message}"):
        TrainerConfig.from_hyperparameters(
            Hyperparameters({"label": "y", hyperparameter: value}), job_name="j"
        )


def test_the_largest_seed_torch_takes_is_accepted() -> None:
    config = TrainerConfig.from_hyperparameters(
        Hyperparameters({"label": "y", "seed": str(2**64 - 1), "eval_every": "0"}), job_name="j"
    )
    assert config.seed == 2**64 - 1 and config.eval_every == 0


@pytest.mark.parametrize(
    ("job", "model"), [("Churn v2.1", "churn-v2-1"), ("2024_run", "model-2024_run"), ("", "model")]
)
def test_model_names_from_job_names(job: str, model: str) -> None:
    assert model_name_from(job) == model
    assert NAME_PATTERN.fullmatch(model)  # what the model registry accepts


def test_a_value_float32_cannot_hold_is_refused_naming_its_column() -> None:
    # 1e39 became inf in the float32 matrix, which the MLP then imputed as missing: silently not the data.
    table = pa.table({"v@1:a": pa.array([1.0, 1e39, math.inf]), "v@1:b": pa.array([1.0, math.nan, 2.0])})
    data = TrainingData(table, "h" * 64, "{}", FEATURES, FEATURES)
    with pytest.raises(
        FailedPrecondition, match=r"column 'v@1:a' holds 1e\+39 \(row 1\), which float32 cannot"
    ):
        data.numpy()
    held = data.numpy(dtype=np.float64)  # a wider dtype holds it; stored inf and NaN stay as they are
    assert held[1, 0] == 1e39 and math.isinf(held[2, 0]) and math.isnan(held[1, 1])
    assert math.isinf(TrainingData(table.slice(2), "h" * 64, "{}", FEATURES, FEATURES).numpy()[0, 0])
