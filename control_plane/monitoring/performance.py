"""Model quality per window of prediction time, from the labelled predictions (:mod:`.feedback`).

Windows are ``[k·step, k·step + width)`` of prediction time (aligned to the Unix epoch; ``step = width``
gives tumbling windows, a smaller step sliding ones). A window's metrics are computed once it holds at
least ``min_labels`` labels — before that it is ``INSUFFICIENT_LABELS`` with no metric. Labels keep
arriving after a prediction, so a window's figures are recomputed from the database on every read.

The prediction of a row comes from its logged output row (see ``MonitorConfig.prediction_output``):
class codes as they are; ``k > 1`` class scores → argmax (score of ``positive_class`` for AUC); one score
→ ``positive_class`` when ``score ≥ decision_threshold`` (else the other class of a binary task).
Metric definitions are those of :mod:`kernels.metrics`.

An output column (and a class code) is an index; labels are label values. They are mapped through the
classes the model version's signature lists (``ModelSignature.classes``: the label of each column, as
the built-in trainer registers them): column ``i`` predicts ``classes[i]``, AUC scores the column of
``positive_class``, and a single score's other class is the one that is not ``positive_class``. Read as
the label itself, the index made a perfect classifier on labels {1, 2} score accuracy 0 (and {-1, 1}
too). Without classes only labels that are indices can be scored (0..k-1; for one score
``positive_class`` and the other of 0 and 1): a row labelled otherwise is left out of the metrics (not
counted invalid, and not towards ``min_labels``) and listed per version in ``unscored`` with the reason,
rather than scored wrong.

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
from control_plane.monitoring.model_outputs import signature_classes
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


Classes = tuple[float, ...]


def derive(
    config: pb.MonitorConfig,
    predictions: Sequence[Sequence[float]],
    is_label: npt.NDArray[np.bool_],
    classes: Sequence[Classes | None] = (),
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``(predicted values or classes, positive-class scores)`` of logged output rows (scores NaN where
    the output holds no score). A row that is empty or holds a value that is not finite predicts nothing:
    NaN in both (a NaN score used to read as the negative class). ``classes``: per row, the label value
    of each output column (:func:`row_classes`); without (or for a row without), an index is read as the
    label it equals, which only labels 0..k-1 are (:func:`unmappable`)."""
    n = len(predictions)
    predicted = np.full(n, np.nan)
    scores = np.full(n, np.nan)
    positive = config.positive_class
    for i, row in enumerate(predictions):
        if not row or not all(math.isfinite(value) for value in row):
            continue
        labels = classes[i] if i < len(classes) else None
        if config.task == pb.TASK_TYPE_REGRESSION:
            predicted[i] = row[0]
        elif is_label[i]:
            code = float(row[0])
            mapped = labels is not None and code.is_integer() and 0 <= code < len(labels)
            predicted[i] = labels[int(code)] if labels is not None and mapped else code
        elif len(row) > 1:
            labels = labels if labels is not None and len(labels) == len(row) else None
            column = int(np.argmax(row))
            predicted[i] = labels[column] if labels is not None else float(column)
            at = _index(labels, positive) if labels is not None else positive
            scores[i] = row[at] if at is not None and 0 <= at < len(row) else math.nan
        else:
            scores[i] = row[0]
            predicted[i] = positive if row[0] >= config.decision_threshold else _other(config, labels)
    return predicted, scores


def _index(labels: Classes, value: float) -> int | None:
    return labels.index(value) if value in labels else None


def _other(config: pb.MonitorConfig, labels: Classes | None) -> float:
    """The class a single score below the threshold predicts: of two classes listed, the one that is not
    ``positive_class``; else the other of 0 and 1."""
    positive = config.positive_class
    if labels is not None and len(labels) == 2 and positive in labels:
        return labels[1 - labels.index(positive)]
    return 0 if positive != 0 else 1


def row_classes(
    joined: LabelledPredictions, classes: Mapping[tuple[str, int], Classes]
) -> list[Classes | None]:
    """Per joined row, the classes of the model version that made it (None where unknown)."""
    return [classes.get(version) for version in joined.versions]


def unmappable(
    config: pb.MonitorConfig,
    predictions: Sequence[Sequence[float]],
    is_label: npt.NDArray[np.bool_],
    labels: npt.NDArray[np.float64],
    classes: Sequence[Classes | None] = (),
    versions: Sequence[tuple[str, int]] = (),
) -> npt.NDArray[np.bool_]:
    """The rows of a classifier's score outputs that cannot be scored: their version's classes unknown
    (or not one per column), and some label of that version (among ``labels``) not an output index
    (``k > 1`` scores: 0..k-1; one score: ``positive_class`` or the other class of :func:`_other`). Then
    the version's labels are not its indices, not even those that look like one (label 1 of classes
    {1, 2} is column 0): every row of it is left out. Read as an index, a label was scored wrong."""
    out = np.zeros(len(predictions), dtype=np.bool_)
    if config.task != pb.TASK_TYPE_CLASSIFICATION:
        return out
    unknown: dict[tuple[str, int] | None, list[int]] = collections.defaultdict(list)  # classes unknown
    outside: set[tuple[str, int] | None] = set()  # versions with a label that is no index
    for i, row in enumerate(predictions):
        if is_label[i] or not row or not all(math.isfinite(value) for value in row):
            continue
        known = classes[i] if i < len(classes) else None
        label = float(labels[i])
        if len(row) > 1:
            if known is not None and len(known) == len(row):
                continue
            index = label.is_integer() and 0 <= label < len(row)
        elif known is not None and len(known) == 2 and config.positive_class in known:
            continue
        else:
            index = label in (config.positive_class, _other(config, None))
        version = versions[i] if i < len(versions) else None
        unknown[version].append(i)
        if not index:
            outside.add(version)
    for version in outside:
        out[unknown[version]] = True
    return out


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
    classes: Mapping[tuple[str, int], Classes] | None = None,
) -> list[pb.PerformanceWindow]:
    """Every window overlapping the range, with its counts, status and (enough labels) metrics.
    ``classes``: per model version, the label value of each output column (:func:`derive`); the rows
    that cannot be mapped without them (:func:`unmappable`) are left out of the metrics and do not count
    towards ``min_labels``."""
    width, step = performance_span_us(config)
    per_row = row_classes(joined, classes or {})
    predicted, scores = derive(config, joined.predictions, joined.is_label, per_row)
    skipped = unmappable(config, joined.predictions, joined.is_label, joined.labels, per_row, joined.versions)
    valid = np.isfinite(predicted)
    out: list[pb.PerformanceWindow] = []
    for start in window_starts(since_us, until_us, width, step):
        end = start + width
        lo, hi = np.searchsorted(joined.ts_us, [start, end], side="left")
        p_lo, p_hi = np.searchsorted(predicted_at, [start, end], side="left")
        window = pb.PerformanceWindow(
            start_us=start, end_us=end, n_predictions=int(p_hi - p_lo), n_labels=int(hi - lo)
        )
        kept = ~skipped[lo:hi]
        if np.count_nonzero(kept) < config.min_labels:
            window.status = pb.PERFORMANCE_STATUS_INSUFFICIENT_LABELS
        else:
            scored = valid[lo:hi] & kept
            window.n_invalid_predictions = int(np.count_nonzero(~valid[lo:hi] & kept))
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
    classes = (
        signature_classes(sessions, joined.versions) if config.task == pb.TASK_TYPE_CLASSIFICATION else {}
    )
    predicted_at = prediction_times(sessions, config.deployment, lo, hi)
    response.windows.extend(windows_of(config, joined, predicted_at, since, until, classes))
    response.unscored.extend(unscored(config, joined))
    response.unscored.extend(unmapped(config, joined, classes))
    return response


def unmapped(
    config: pb.MonitorConfig, joined: LabelledPredictions, classes: Mapping[tuple[str, int], Classes]
) -> list[pb.UnscoredPredictions]:
    """Per model version, the labelled rows :func:`unmappable` left out of the metrics, with the reason."""
    per_row = row_classes(joined, classes)
    skipped = unmappable(config, joined.predictions, joined.is_label, joined.labels, per_row, joined.versions)
    counts: collections.Counter[tuple[str, int]] = collections.Counter()
    example: dict[tuple[str, int], float] = {}
    for i in np.flatnonzero(skipped):
        version = joined.versions[i] if i < len(joined.versions) else ("", 0)
        counts[version] += 1
        example.setdefault(version, float(joined.labels[i]))
    return [
        pb.UnscoredPredictions(
            model_name=model,
            version=version,
            output=config.prediction_output,
            n_labels=n,
            reason=(
                f"labels such as {example[model, version]:g} are not output indices and the signature of"
                f" {model} v{version} lists no classes to map its outputs to labels (ModelSignature.classes):"
                " left out of the metrics, not scored wrong; register the version with its classes"
            ),
        )
        for (model, version), n in sorted(counts.items())
    ]


def unscored(config: pb.MonitorConfig, joined: LabelledPredictions) -> list[pb.UnscoredPredictions]:
    """Per model version, the labelled rows indexed without a value: logged without the output the config
    names (the monitor indexes such a row with an empty prediction, :mod:`.entry_batch`)."""
    counts = collections.Counter(
        version for version, row in zip(joined.versions, joined.predictions, strict=True) if not row
    )
    return [
        pb.UnscoredPredictions(model_name=model, version=version, output=config.prediction_output, n_labels=n)
        for (model, version), n in sorted(counts.items())
    ]
