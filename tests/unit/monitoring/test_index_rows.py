"""An entry's rows for the prediction index: valued from the output the config names, and valueless (but
there, so their labels join) when the entry's answer lacks it."""

from __future__ import annotations

import numpy as np

from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.monitoring.entries import LoggedPrediction
from control_plane.monitoring.index_rows import index_rows


def logged(outputs: dict[str, list[list[float]]], integer: frozenset[str] = frozenset()) -> LoggedPrediction:
    return LoggedPrediction(
        request_id="r1",
        deployment="churn",
        model="churn-model",
        version=3,
        variant="primary",
        ts_us=7,
        features=np.zeros((2, 3)),
        outputs={name: np.array(values, dtype=np.float64) for name, values in outputs.items()},
        integer_outputs=integer,
    )


def test_rows_hold_the_named_output_and_whether_it_holds_class_codes() -> None:
    entry = logged({"label": [[1.0], [0.0]], "probabilities": [[0.2, 0.8], [0.9, 0.1]]}, frozenset({"label"}))
    config = pb.MonitorConfig(deployment="churn", prediction_output="probabilities")
    rows, missing = index_rows(config, entry)
    assert missing is None
    assert [(r.row, r.prediction, r.prediction_is_label) for r in rows] == [
        (0, [0.2, 0.8], False),
        (1, [0.9, 0.1], False),
    ]
    first, _ = index_rows(pb.MonitorConfig(deployment="churn"), entry)  # no name: the first output
    assert [(r.prediction, r.prediction_is_label) for r in first] == [([1.0], True), ([0.0], True)]


def test_an_answer_without_the_named_output_is_indexed_without_values() -> None:
    entry = logged({"score": [[0.5], [0.25]]})
    rows, missing = index_rows(pb.MonitorConfig(deployment="churn", prediction_output="probabilities"), entry)
    assert missing == "probabilities"
    assert [(r.request_id, r.row, r.version, r.prediction) for r in rows] == [
        ("r1", 0, 3, []),
        ("r1", 1, 3, []),
    ]
