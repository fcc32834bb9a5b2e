"""Model quality per window of prediction time, from the labelled predictions (:mod:`.feedback`).

Windows are ``[k·step, k·step + width)`` of prediction time (aligned to the Unix epoch; ``step = width``
gives tumbling windows, a smaller step sliding ones). A window's metrics are computed once it holds at
least ``min_labels`` labels — before that it is ``INSUFFICIENT_LABELS`` with no metric. Labels keep
arriving after a prediction, so a window's figures are recomputed from the database on every read.

The prediction of a row comes from its logged output row (see ``MonitorConfig.prediction_output``):
class codes as they are; ``k > 1`` class scores → argmax (score of ``positive_class`` for AUC); one score
→ ``positive_class`` when ``score ≥ decision_threshold`` (else the other class of a binary task).
Metric definitions are those of :mod:`kernels.metrics`.

A labelled row whose logged output is missing or holds a value that is not finite (a model answering NaN)
has no prediction to score: it is left out of the metrics and counted (``n_invalid_predictions``), and with
an alert threshold set it makes its window DEGRADED. Rows logged without the output the config names (the
monitor indexes them without a value) are also listed per model version (``unscored``), so the reply
says why they were not scored. One NaN in a window made every metric NaN, so all of
them were left out and the window read OK whatever the other rows' errors.

Window bounds are int64 microseconds (the database's and the protocol's): a range whose windows would
reach past them is refused (INVALID_ARGUMENT), not answered INTERNAL.

One read computes at most ``MAX_WINDOWS`` windows. A range given that overlaps more is refused
(INVALID_ARGUMENT naming the longest range that fits); the default range (24 h) is cut to the most recent
windows that fit (``range_cut``): sliding windows with a small step (1 h every 30 s: 2,999 windows a day)
failed every plain ``aetherctl performance`` of a config ConfigureMonitor had accepted.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import monitoring_pb2 as pb
from clients.errors import InvalidArgument
from control_plane.monitoring.config import ERROR_METRICS, MAX_WINDOWS, max_range_us, performance_span_us
from control_plane.monitoring.feedback import (
    LabelledPredictions,
    labelled_predictions,
    orphaned_total,
    prediction_times,
)
from kernels import metrics

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
DEFAULT_RANGE_US = 24 * 3600 * 1_000_000


def window_starts(since_us: int, until_us: int, width_us: int, step_us: int) -> list[int]:
    """Starts of the aligned windows overlapping ``[since_us, until_us)``, oldest first."""
    if until_us <= since_us:
        return []
    first = ((since_us - width_us) // step_us + 1) * step_us  # the first window ending after since_us
    count = (until_us - 1 - first) // step_us + 1
    if count > MAX_WINDOWS:
        raise InvalidArgument(
            f"the time range spans {count} windows of {width_us / 1e6:g} s every {step_us / 1e6:g} s; at most"
            f" {MAX_WINDOWS} (a range of at most {max(max_range_us(width_us, step_us), 0) / 1e6:g} s)"
        )
    return [first + i * step_us for i in range(max(0, count))]


def derive(
    config: pb.MonitorConfig, predictions: Sequence[Sequence[float]], is_label: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``(predicted values or classes, positive-class scores)`` of logged output rows (scores NaN where
    the output holds no score). A row that is empty or holds a value that is not finite predicts nothing:
    NaN in both (a NaN score used to read as the negative class)."""
    n = len(predictions)
    predicted = np.full(n, np.nan)
    scores = np.full(n, np.nan)
    positive = config.positive_class
    other = 0 if positive != 0 else 1
    for i, row in enumerate(predictions):
        if not row or not all(math.isfinite(value) for value in row):
            continue
        if config.task == pb.TASK_TYPE_REGRESSION or is_label[i]:
            predicted[i] = row[0]
        elif len(row) > 1:
            predicted[i] = float(np.argmax(row))
            scores[i] = row[positive] if 0 <= positive < len(row) else math.nan
        else:
            scores[i] = row[0]
            predicted[i] = positive if row[0] >= config.decision_threshold else other
    return predicted, scores


def window_metrics(
    config: pb.MonitorConfig,
    labels: npt.NDArray[np.float64],
    predicted: npt.NDArray[np.float64],
    scores: npt.NDArray[np.float64],
) -> dict[str, float]:
    """The task's metrics on one window's labelled rows; undefined ones (NaN) left out."""
    if config.task == pb.TASK_TYPE_CLASSIFICATION:
        positive = float(config.positive_class)
        values = {
            "accuracy": metrics.accuracy(labels, predicted),
            "precision": metrics.precision(labels, predicted, positive),
            "recall": metrics.recall(labels, predicted, positive),
            "auc": metrics.roc_auc(labels == positive, scores),
        }
    elif config.task == pb.TASK_TYPE_REGRESSION:
        values = {
            "mae": metrics.mae(labels, predicted),
            "rmse": metrics.rmse(labels, predicted),
            "mape": metrics.mape(labels, predicted),
        }
    else:
        values = {}
    return {name: value for name, value in values.items() if not math.isnan(value)}


def past_threshold(config: pb.MonitorConfig, values: Mapping[str, float]) -> bool:
    """Whether the alert metric is past its threshold (False without a threshold, or when the metric is
    undefined on the window)."""
    if not config.HasField("alert_threshold") or config.alert_metric not in values:
        return False
    value = values[config.alert_metric]
    if config.alert_metric in ERROR_METRICS:
        return value > config.alert_threshold
    return value < config.alert_threshold


def degraded(config: pb.MonitorConfig, window: pb.PerformanceWindow) -> bool:
    """Whether a window with metrics is DEGRADED: its alert metric is past the threshold, or (a threshold
    set) some labelled prediction could not be scored."""
    if not config.HasField("alert_threshold"):
        return False
    return past_threshold(config, window.metrics) or window.n_invalid_predictions > 0


def windows_of(
    config: pb.MonitorConfig,
    joined: LabelledPredictions,
    predicted_at: npt.NDArray[np.int64],
    since_us: int,
    until_us: int,
) -> list[pb.PerformanceWindow]:
    """Every window overlapping the range, with its counts, status and (enough labels) metrics."""
    width, step = performance_span_us(config)
    predicted, scores = derive(config, joined.predictions, joined.is_label)
    valid = np.isfinite(predicted)
    out: list[pb.PerformanceWindow] = []
    for start in window_starts(since_us, until_us, width, step):
        end = start + width
        lo, hi = np.searchsorted(joined.ts_us, [start, end], side="left")
        p_lo, p_hi = np.searchsorted(predicted_at, [start, end], side="left")
        window = pb.PerformanceWindow(
            start_us=start, end_us=end, n_predictions=int(p_hi - p_lo), n_labels=int(hi - lo)
        )
        if hi - lo < config.min_labels:
            window.status = pb.PERFORMANCE_STATUS_INSUFFICIENT_LABELS
        else:
            scored = valid[lo:hi]
            window.n_invalid_predictions = int(np.count_nonzero(~scored))
            values = window_metrics(
                config, joined.labels[lo:hi][scored], predicted[lo:hi][scored], scores[lo:hi][scored]
            )
            window.metrics.update(values)
            window.status = (
                pb.PERFORMANCE_STATUS_DEGRADED if degraded(config, window) else pb.PERFORMANCE_STATUS_OK
            )
        out.append(window)
    return out


def performance(
    sessions: sessionmaker[Session], config: pb.MonitorConfig, since_us: int = 0, until_us: int = 0
) -> pb.GetPerformanceResponse:
    """The quality windows of ``config.deployment`` overlapping ``[since_us, until_us)`` (defaults: the
    24 hours up to now, cut to the most recent windows one read may compute: ``range_cut``)."""
    until = until_us or time.time_ns() // 1000
    since = since_us or until - DEFAULT_RANGE_US
    if since >= until:
        raise InvalidArgument("since_us must be before until_us")
    response = pb.GetPerformanceResponse(
        deployment=config.deployment, task=config.task, alert_metric=config.alert_metric
    )
    if not since_us and config.task != pb.TASK_TYPE_UNSPECIFIED:
        width, step = performance_span_us(config)
        fits = max_range_us(width, step)
        if until - since > fits:
            since, response.range_cut = until - fits, True
    response.since_us, response.until_us = since, until
    if config.HasField("alert_threshold"):
        response.alert_threshold = config.alert_threshold
    response.orphaned_feedback = orphaned_total(sessions)
    if config.task == pb.TASK_TYPE_UNSPECIFIED:
        return response
    width, step = performance_span_us(config)
    starts = window_starts(since, until, width, step)
    if not starts:
        return response
    # Read every row the windows cover, which reach before ``since`` and after ``until``.
    lo, hi = starts[0], starts[-1] + width
    if lo < INT64_MIN or hi > INT64_MAX:
        raise InvalidArgument(
            f"since_us {since} .. until_us {until}: its windows of {width} µs reach past the int64 "
            "microseconds timestamps are; give a range within it"
        )
    joined = labelled_predictions(sessions, config.deployment, lo, hi)
    response.windows.extend(
        windows_of(config, joined, prediction_times(sessions, config.deployment, lo, hi), since, until)
    )
    response.unscored.extend(unscored(config, joined))
    return response


def unscored(config: pb.MonitorConfig, joined: LabelledPredictions) -> list[pb.UnscoredPredictions]:
    """Per model version, the labelled rows indexed without a value: logged without the output the config
    names (the monitor indexes such a row with an empty prediction, :mod:`.monitor`)."""
    counts = collections.Counter(
        version for version, row in zip(joined.versions, joined.predictions, strict=True) if not row
    )
    return [
        pb.UnscoredPredictions(model_name=model, version=version, output=config.prediction_output, n_labels=n)
        for (model, version), n in sorted(counts.items())
    ]
