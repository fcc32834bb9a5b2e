"""Quality windows by prediction time against a brute-force recomputation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import monitoring_pb2 as pb
from clients.errors import FailedPrecondition, InvalidArgument
from control_plane.artifacts.store import ArtifactStore
from control_plane.monitoring.config import MAX_STEPS_PER_WIDTH, MAX_WINDOWS, effective, max_range_us
from control_plane.monitoring.feedback import (
    IndexedPrediction,
    LabelledPredictions,
    index_predictions,
    record_feedback,
)
from control_plane.monitoring.performance import derive, performance, unmapped, window_starts, windows_of
from tests.unit.monitoring.conftest import register_version
from tests.unit.monitoring.world import T0

SECOND = 1_000_000


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=0, max_value=10**7),
    st.integers(min_value=1, max_value=10**6),
    st.integers(min_value=1, max_value=5 * 10**5),
    st.integers(min_value=1, max_value=4),
)
def test_window_starts_are_exactly_the_aligned_windows_overlapping_the_range(
    since: int, span: int, step: int, steps_per_width: int
) -> None:
    width = step * steps_per_width
    until = since + span
    assume((span + width) // step < 1500)  # within the windows one call may ask for
    starts = window_starts(since, until, width, step)
    expected = [
        k * step
        for k in range(-width // step - 1, until // step + 2)
        if k * step < until and k * step + width > since
    ]
    assert starts == expected


def brute_force(
    config: pb.MonitorConfig, ts: list[int], labels: list[int], scores: list[float], start: int, end: int
) -> dict[str, float]:
    rows = [(y, s) for t, y, s in zip(ts, labels, scores, strict=True) if start <= t < end]
    predicted = [1 if s >= config.decision_threshold else 0 for _, s in rows]
    truth = [y for y, _ in rows]
    out: dict[str, float] = {
        "accuracy": sum(p == y for p, y in zip(predicted, truth, strict=True)) / len(rows)
    }
    tp = sum(p == 1 and y == 1 for p, y in zip(predicted, truth, strict=True))
    if sum(predicted):
        out["precision"] = tp / sum(predicted)
    if sum(truth):
        out["recall"] = tp / sum(truth)
    pos = [s for y, s in rows if y == 1]
    neg = [s for y, s in rows if y == 0]
    if pos and neg:
        out["auc"] = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg) / (
            len(pos) * len(neg)
        )
    return out


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 59), st.integers(0, 1), st.integers(0, 10)), min_size=0, max_size=80),
    st.sampled_from([(10, 10), (20, 5), (30, 10)]),
    st.integers(min_value=1, max_value=8),
)
def test_sliding_windows_match_a_brute_force_recount(
    rows: list[tuple[int, int, int]], shape: tuple[int, int], min_labels: int
) -> None:
    width_s, step_s = shape
    config = effective(
        pb.MonitorConfig(
            deployment="d",
            task=pb.TASK_TYPE_CLASSIFICATION,
            performance_window_seconds=width_s,
            performance_step_seconds=step_s,
            min_labels=min_labels,
            alert_threshold=0.6,
        )
    )
    rows = sorted(rows)
    ts = [t * SECOND for t, _, _ in rows]
    labels = [y for _, y, _ in rows]
    scores = [s / 10 for _, _, s in rows]
    joined = LabelledPredictions(
        ts_us=np.array(ts, dtype=np.int64),
        labels=np.array(labels, dtype=np.float64),
        predictions=[[s] for s in scores],
        is_label=np.zeros(len(rows), dtype=np.bool_),
    )
    # Every labelled prediction plus one unlabelled prediction per second.
    predicted_at = np.sort(np.concatenate([joined.ts_us, np.arange(60, dtype=np.int64) * SECOND]))
    windows = windows_of(config, joined, predicted_at, 0, 60 * SECOND)
    for window in windows:
        inside = [t for t in ts if window.start_us <= t < window.end_us]
        assert window.n_labels == len(inside)
        assert window.n_predictions == len(inside) + sum(
            window.start_us <= s * SECOND < window.end_us for s in range(60)
        )
        if len(inside) < min_labels:
            assert window.status == pb.PERFORMANCE_STATUS_INSUFFICIENT_LABELS and not window.metrics
            continue
        expected = brute_force(config, ts, labels, scores, window.start_us, window.end_us)
        assert set(window.metrics) == set(expected)
        for name, value in expected.items():
            assert math.isclose(window.metrics[name], value, rel_tol=1e-12, abs_tol=1e-12)
        degraded = expected["accuracy"] < 0.6
        assert window.status == (pb.PERFORMANCE_STATUS_DEGRADED if degraded else pb.PERFORMANCE_STATUS_OK)


def test_predictions_derive_from_scores_class_scores_or_class_codes() -> None:
    config = effective(
        pb.MonitorConfig(deployment="d", task=pb.TASK_TYPE_CLASSIFICATION, decision_threshold=0.7)
    )
    predicted, scores = derive(
        config, [[0.8], [0.6], [0.1, 0.2, 0.7], [2.0]], np.array([False, False, False, True])
    )
    np.testing.assert_array_equal(predicted, [1, 0, 2, 2])
    np.testing.assert_array_equal(scores[:3], [0.8, 0.6, 0.2])
    assert math.isnan(scores[3])


def test_regression_windows_report_error_metrics_and_degrade_above_the_threshold() -> None:
    config = effective(
        pb.MonitorConfig(deployment="d", task=pb.TASK_TYPE_REGRESSION, min_labels=2, alert_threshold=1.0)
    )
    joined = LabelledPredictions(
        ts_us=np.array([0, 1, 3600 * SECOND], dtype=np.int64),
        labels=np.array([2.0, 4.0, 10.0]),
        predictions=[[1.0], [6.0], [10.0]],
        is_label=np.zeros(3, dtype=np.bool_),
    )
    windows = windows_of(config, joined, joined.ts_us, 0, 7200 * SECOND)
    first, second = windows
    assert first.metrics["mae"] == 1.5 and math.isclose(first.metrics["rmse"], math.sqrt(2.5))
    assert first.metrics["mape"] == (0.5 + 0.5) / 2
    assert first.status == pb.PERFORMANCE_STATUS_DEGRADED
    assert second.status == pb.PERFORMANCE_STATUS_INSUFFICIENT_LABELS


@pytest.mark.parametrize(
    ("width_s", "step_s"),
    [(1e-7, 0.0), (0.5, 0.0), (1e300, 0.0), (math.inf, 0.0), (math.nan, 0.0), (3600, 0.5), (3600, 7200)],
)
def test_quality_windows_of_less_than_a_second_or_more_than_a_year_are_refused(
    width_s: float, step_s: float
) -> None:
    # 1e-7 s rounded to windows of 0 µs (a division by zero in every quality check), 1e300 s overflowed.
    config = pb.MonitorConfig(
        deployment="d",
        task=pb.TASK_TYPE_CLASSIFICATION,
        performance_window_seconds=width_s,
        performance_step_seconds=step_s,
    )
    with pytest.raises(InvalidArgument, match=r"performance_(window|step)_seconds must lie in"):
        effective(config)


def test_quality_windows_of_one_second_to_366_days_are_accepted() -> None:
    for width_s, step_s in [(1, 1), (1.5, 1), (366 * 86400, 86400)]:
        config = pb.MonitorConfig(
            deployment="d", performance_window_seconds=width_s, performance_step_seconds=step_s
        )
        assert effective(config).performance_step_seconds == step_s


def test_a_stored_config_whose_windows_cannot_be_computed_fails_its_precondition(
    sessions: sessionmaker[Session],
) -> None:
    # As stored before the bounds (it never passes effective()): an INTERNAL ZeroDivisionError before.
    config = pb.MonitorConfig(
        deployment="d",
        task=pb.TASK_TYPE_CLASSIFICATION,
        performance_window_seconds=1e-7,
        performance_step_seconds=1e-7,
    )
    with pytest.raises(FailedPrecondition, match="configure performance_window_seconds"):
        performance(sessions, config, 0, SECOND)


def _regression_window(predictions: list[list[float]], threshold: float | None) -> pb.PerformanceWindow:
    config = pb.MonitorConfig(deployment="d", task=pb.TASK_TYPE_REGRESSION, min_labels=2, alert_metric="mae")
    if threshold is not None:
        config.alert_threshold = threshold
    n = len(predictions)
    joined = LabelledPredictions(
        ts_us=np.arange(n, dtype=np.int64),
        labels=np.zeros(n),
        predictions=predictions,
        is_label=np.zeros(n, dtype=np.bool_),
    )
    (window,) = windows_of(effective(config), joined, joined.ts_us, 0, 1)
    return window


def test_a_prediction_that_is_not_finite_is_counted_and_left_out_of_the_metrics() -> None:
    # One NaN made every metric NaN, so all were dropped and the window read OK whatever the errors.
    rows: list[list[float]] = [[100.0]] * 5 + [[math.nan], [math.inf], []]
    window = _regression_window(rows, threshold=500.0)
    assert window.metrics["mae"] == 100.0 and window.n_invalid_predictions == 3
    assert window.status == pb.PERFORMANCE_STATUS_DEGRADED  # a model answering NaN is degraded
    assert _regression_window([[100.0]] * 5, threshold=50.0).status == pb.PERFORMANCE_STATUS_DEGRADED
    clean = _regression_window([[1.0]] * 5, threshold=50.0)
    assert clean.status == pb.PERFORMANCE_STATUS_OK and clean.n_invalid_predictions == 0
    # Without an alert threshold nothing is degraded; the count is still reported.
    unalerted = _regression_window(rows, threshold=None)
    assert unalerted.status == pb.PERFORMANCE_STATUS_OK and unalerted.n_invalid_predictions == 3


def test_a_score_that_is_not_finite_predicts_no_class() -> None:
    config = effective(pb.MonitorConfig(deployment="d", task=pb.TASK_TYPE_CLASSIFICATION))
    predicted, scores = derive(config, [[math.nan], [0.9], [0.2, math.inf]], np.zeros(3, dtype=np.bool_))
    assert math.isnan(predicted[0]) and math.isnan(scores[0])  # read as the negative class before
    assert predicted[1] == 1 and math.isnan(predicted[2])


@pytest.mark.parametrize(("since", "until"), [(0, 2**63 - 1), (-(2**63), -(2**63) + 10)])
def test_a_range_whose_windows_pass_the_int64_bounds_is_refused(
    sessions: sessionmaker[Session], since: int, until: int
) -> None:
    # An in-range since_us/until_us made windows past int64: an INTERNAL OverflowError from the database.
    config = effective(pb.MonitorConfig(deployment="d", task=pb.TASK_TYPE_REGRESSION))
    with pytest.raises(InvalidArgument, match="reach past the int64"):
        performance(sessions, config, since, until)


@pytest.mark.parametrize(("width_s", "step_s"), [(3600, 1), (3600, 3.5), (1001, 1)])
def test_a_width_of_more_steps_than_one_read_can_hold_is_refused(width_s: float, step_s: float) -> None:
    # 1 h every 1 s was accepted, yet even a one-second range overlapped 3,601 windows (the cap 2,000):
    # every GetPerformance and every quality check of the deployment failed.
    config = pb.MonitorConfig(
        deployment="d",
        task=pb.TASK_TYPE_CLASSIFICATION,
        performance_window_seconds=width_s,
        performance_step_seconds=step_s,
    )
    with pytest.raises(
        InvalidArgument, match="performance_window_seconds may be at most 1000 performance_step"
    ):
        effective(config)


@pytest.mark.parametrize(
    ("width_s", "step_s", "cut"),
    [(3600, 3.6, True), (3600, 30, True), (1000, 1, True), (3600, 60, False), (366 * 86400, 31622.4, False)],
)
def test_a_sliding_quality_window_the_config_accepts_is_computable(
    sessions: sessionmaker[Session], width_s: float, step_s: float, cut: bool
) -> None:
    config = effective(
        pb.MonitorConfig(
            deployment="d",
            task=pb.TASK_TYPE_CLASSIFICATION,
            performance_window_seconds=width_s,
            performance_step_seconds=step_s,
        )
    )
    now = T0
    assert len(performance(sessions, config, now - SECOND, now).windows) <= MAX_WINDOWS  # the narrowest
    # The default range (24 h; aetherctl performance) is cut to the most recent windows that fit: said so.
    default = performance(sessions, config, 0, now)
    assert default.until_us == now and default.range_cut == cut
    assert default.since_us == (now - max_range_us(*_span(config)) if cut else now - 24 * 3600 * SECOND)
    assert 0 < len(default.windows) <= MAX_WINDOWS
    assert default.windows[-1].start_us < now <= default.windows[-1].end_us
    if cut:  # the same range given is refused, naming the longest that fits
        with pytest.raises(InvalidArgument, match=r"at most 2000 \(a range of at most"):
            performance(sessions, config, now - 24 * 3600 * SECOND, now)


def _span(config: pb.MonitorConfig) -> tuple[int, int]:
    return round(config.performance_window_seconds * 1e6), round(config.performance_step_seconds * 1e6)


def test_a_stored_width_of_more_steps_than_one_read_can_hold_fails_its_precondition(
    sessions: sessionmaker[Session],
) -> None:
    # As stored before the width was bounded in steps (it never passes effective()).
    config = pb.MonitorConfig(
        deployment="d",
        task=pb.TASK_TYPE_CLASSIFICATION,
        performance_window_seconds=3600,
        performance_step_seconds=1,
    )
    with pytest.raises(FailedPrecondition, match="the width at most 1000 steps"):
        performance(sessions, config, T0 - SECOND, T0)
    config.performance_step_seconds = 2.4  # 1,500 steps: stored earlier, still computable
    assert performance(sessions, config, 0, T0).range_cut


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=1, max_value=10**9),
    st.integers(min_value=1, max_value=MAX_STEPS_PER_WIDTH),
    st.integers(min_value=0, max_value=10**9),
    st.integers(min_value=-(10**15), max_value=10**15),
)
def test_the_longest_range_that_fits_never_overlaps_more_windows_than_one_read_holds(
    step: int, steps: int, extra: int, until: int
) -> None:
    width = min(step * steps + extra % step, step * MAX_STEPS_PER_WIDTH)  # not always a whole number of steps
    longest = max_range_us(width, step)
    assert longest >= (MAX_WINDOWS - MAX_STEPS_PER_WIDTH - 1) * step  # 999 steps or more
    assert len(window_starts(until - longest, until, width, step)) <= MAX_WINDOWS  # raises past the cap


def _classified(
    labels: list[float], outputs: list[list[float]], classes: tuple[float, ...] | None, **fields: Any
) -> tuple[pb.PerformanceWindow, list[pb.UnscoredPredictions]]:
    """The one window of ``labels`` predicted as ``outputs`` by model m v1 with ``classes`` (None: its
    signature lists none), and the rows left unscored."""
    n = len(labels)
    config = effective(
        pb.MonitorConfig(deployment="d", task=pb.TASK_TYPE_CLASSIFICATION, min_labels=1, **fields)
    )
    joined = LabelledPredictions(
        ts_us=np.arange(n, dtype=np.int64),
        labels=np.array(labels, dtype=np.float64),
        predictions=outputs,
        is_label=np.zeros(n, dtype=np.bool_),
        versions=[("m", 1)] * n,
    )
    known = {} if classes is None else {("m", 1): classes}
    (window,) = windows_of(config, joined, joined.ts_us, 0, 1, known)
    return window, unmapped(config, joined, known)


def test_a_perfect_classifier_on_labels_one_and_two_scores_accuracy_one() -> None:
    # The built-in trainer's classes are the label values in order (classes ["1.0", "2.0"]): column 0 is
    # label 1, column 1 label 2. Read as the labels themselves, the argmax indices scored every right
    # prediction wrong (accuracy 0, recall 0) and AUC was dropped (column 2 does not exist).
    labels = [1.0, 2.0] * 30
    outputs = [[0.9, 0.1] if y == 1.0 else [0.2, 0.8] for y in labels]
    window, skipped = _classified(labels, outputs, (1.0, 2.0), positive_class=2)
    assert dict(window.metrics) == {"accuracy": 1.0, "precision": 1.0, "recall": 1.0, "auc": 1.0}
    assert not skipped and window.n_invalid_predictions == 0


def test_a_single_score_on_labels_minus_one_and_one_predicts_the_class_that_is_not_positive() -> None:
    labels = [-1.0, 1.0] * 30
    window, _ = _classified(labels, [[0.1] if y < 0 else [0.9] for y in labels], (-1.0, 1.0))
    assert dict(window.metrics) == {"accuracy": 1.0, "precision": 1.0, "recall": 1.0, "auc": 1.0}


def test_labels_that_are_not_output_indices_are_not_scored_wrong_without_classes() -> None:
    # No classes to map the outputs through: labels 1 and 2 cannot be compared with indices 0 and 1, so
    # those rows are left out (not invalid: nothing says the model is wrong) and said why, per version.
    labels = [1.0, 2.0] * 30
    outputs = [[0.9, 0.1] if y == 1.0 else [0.2, 0.8] for y in labels]
    window, skipped = _classified(labels, outputs, None, positive_class=2, alert_threshold=0.9)
    assert window.status == pb.PERFORMANCE_STATUS_INSUFFICIENT_LABELS and not window.metrics
    assert window.n_labels == 60 and window.n_invalid_predictions == 0  # no false DEGRADED
    (item,) = skipped
    # Every row of the version: label 1 looks like index 1, yet is column 0 of classes {1, 2}.
    assert (item.model_name, item.version) == ("m", 1) and item.n_labels == 60
    assert "lists no classes" in item.reason and "ModelSignature.classes" in item.reason
    # Labels 0..k-1 are their own indices: scored as before without classes.
    zero_one = [0.0, 1.0] * 30
    window, skipped = _classified(zero_one, [[0.9, 0.1] if y == 0 else [0.2, 0.8] for y in zero_one], None)
    assert window.metrics["accuracy"] == 1.0 and not skipped


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(-5, 12), min_size=2, max_size=4, unique=True),
    st.lists(
        st.tuples(st.integers(0, 3), st.lists(st.integers(0, 9), min_size=4, max_size=4)),
        min_size=1,
        max_size=40,
    ),
    st.booleans(),
    st.integers(0, 3),
)
def test_class_metrics_match_a_brute_force_count_for_any_label_set(
    values: list[int], rows: list[tuple[int, list[int]]], perfect: bool, positive_at: int
) -> None:
    classes = tuple(float(v) for v in sorted(values))  # the trainer's order: by value
    k = len(classes)
    positive = classes[positive_at % k]
    truth = [classes[c % k] for c, _ in rows]
    # A perfect classifier puts its highest score on the label's column; a random one anywhere.
    outputs = [
        [10.0 if j == classes.index(y) else 0.0 for j in range(k)] if perfect else [s / 10 for s in raw[:k]]
        for y, (_, raw) in zip(truth, rows, strict=True)
    ]
    window, skipped = _classified(truth, outputs, classes, positive_class=int(positive))
    assert not skipped
    predicted = [classes[o.index(max(o))] for o in outputs]  # the first maximum, as argmax
    right = sum(p == y for p, y in zip(predicted, truth, strict=True))
    expected: dict[str, float] = {"accuracy": right / len(rows)}
    tp = sum(p == positive and y == positive for p, y in zip(predicted, truth, strict=True))
    if any(p == positive for p in predicted):
        expected["precision"] = tp / sum(p == positive for p in predicted)
    if any(y == positive for y in truth):
        expected["recall"] = tp / sum(y == positive for y in truth)
    column = classes.index(positive)
    pos = [o[column] for o, y in zip(outputs, truth, strict=True) if y == positive]
    neg = [o[column] for o, y in zip(outputs, truth, strict=True) if y != positive]
    if pos and neg:
        expected["auc"] = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg) / (
            len(pos) * len(neg)
        )
    assert set(window.metrics) == set(expected)
    for name, value in expected.items():
        assert math.isclose(window.metrics[name], value, rel_tol=1e-12, abs_tol=1e-12), name
    if perfect:
        assert window.metrics["accuracy"] == 1.0 and window.metrics.get("recall", 1.0) == 1.0


def test_the_classes_a_version_registered_map_its_outputs_to_labels(
    sessions: sessionmaker[Session], store: ArtifactStore
) -> None:
    # Version 1 lists its classes (as the built-in trainer registers them), version 2 none: the first is
    # scored through them, the second left out with the reason, in GetPerformance's reply.
    register_version(sessions, store, "m", classes=("1.0", "2.0"))
    register_version(sessions, store, "m")
    labels = [1.0, 2.0] * 10
    rows = [
        IndexedPrediction(
            f"r{v}-{i}", 0, "d", "m", v, "primary", T0 + i, [0.9, 0.1] if y == 1 else [0.2, 0.8], False
        )
        for v in (1, 2)
        for i, y in enumerate(labels)
    ]
    index_predictions(sessions, rows)
    record_feedback(
        sessions, [pb.Feedback(request_id=r.request_id, label=labels[r.ts_us - T0]) for r in rows]
    )
    config = effective(
        pb.MonitorConfig(deployment="d", task=pb.TASK_TYPE_CLASSIFICATION, min_labels=1, positive_class=2)
    )
    answer = performance(sessions, config, T0, T0 + SECOND)
    (window,) = [w for w in answer.windows if w.n_labels]
    assert window.n_labels == 40 and dict(window.metrics)["accuracy"] == 1.0
    assert window.metrics["recall"] == 1.0 and window.metrics["auc"] == 1.0
    (skipped,) = answer.unscored
    assert (skipped.model_name, skipped.version, skipped.n_labels) == ("m", 2, 20)
    assert "signature of m v2 lists no classes" in skipped.reason
