"""Challenger against champion on the same labelled holdout, with quality gates.

Both ONNX models run with ONNX Runtime (CPU, one thread each, so the two latencies are comparable) on
the same rows. Predictions are read from the output the monitor reads (the one the deployment's
``MonitorConfig.prediction_output`` names, else the first; :mod:`control_plane.monitoring.outputs`; a
model without the named output fails the evaluation with ``FAILED_PRECONDITION``) exactly as the monitor
reads logged outputs (:func:`control_plane.monitoring.performance.derive`: class codes — integer outputs
— as they are, ``k > 1`` scores → argmax, one score → the positive class at ``score ≥
decision_threshold``; a score column mapped to its label through the model's classes, its ``aether.classes``
metadata, and without them rows whose label is no column index left out, as the monitor leaves them out),
and the metrics are the monitor's
(:func:`~control_plane.monitoring.performance.window_metrics`), so a gate compares the same figure the
performance trigger watches.

Like the monitor's windows, the metrics leave out the rows that cannot be scored: a row whose label is not
finite, or on which either model gives no finite prediction (a NaN answer, a feature missing as NaN).
Both models are scored on the same rows, those both answer; each model's count of labelled rows it gave
no finite prediction for is its ``n_invalid``. One NaN answer used to make the metric NaN, so a champion
answering NaN on one row of 400 had no metric and any challenger passed, and one holdout row with a NaN
feature made every challenger fail.

Gates (:func:`judge`, pure):

* enough rows: at least ``min_rows`` labelled rows are scored (both models answer them);
* answers: the challenger gives no finite prediction on at most as many rows as the champion (it must not
  trade the rows it fails on for a better metric on the others);
* quality: on the primary metric, ``challenger ≥ champion − d·|champion|`` (``≤ champion + d·|champion|``
  for error metrics such as MAE), with ``d = max_relative_degradation`` (default 0.005: "at most 0.5 %
  worse"); a challenger whose metric is undefined on the scored rows fails, and so does one whose
  champion's metric is undefined there (nothing to compare with: promoting it is a person's call);
* latency: the challenger's p95 single-row latency is within ``latency_budget_ms`` (when set) and within
  ``max_latency_ratio`` × the champion's (when set). Latency is measured, interleaved (each row run by
  both models, which goes first alternating), on up to ``latency_rows`` single rows of the holdout after a
  warm-up run, in :data:`LATENCY_ROUNDS` rounds: each model's p95 is the median of its rounds' p95s. One
  round's p95 is its fourth-slowest of 64 calls, and a few calls preempted on a busy machine made a
  challenger as fast as its champion fail the ratio gate (0.39 against 0.06 ms, in CI); a burst of load
  now spoils one round, not the verdict.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from clients.aether.v1 import monitoring_pb2 as mpb
from clients.errors import FailedPrecondition
from control_plane.model_registry.model_classes import declared_classes
from control_plane.monitoring.model_outputs import class_values
from control_plane.monitoring.outputs import holds_class_codes, prediction_output
from control_plane.monitoring.performance import Classes, derive, unmappable, window_metrics
from control_plane.retraining.inputs import model_inputs

FloatMatrix = npt.NDArray[np.float64]
DEFAULT_LATENCY_ROWS = 64
#: Rounds of latency measurement over the rows (module doc).
LATENCY_ROUNDS = 5


@dataclass(frozen=True)
class Holdout:
    """Labelled rows: ``features`` ``[n, f]`` and ``labels`` ``[n]``; ``source`` says where they came from.
    ``feature_refs`` names the columns of ``features`` (the logging version's refs, in order); empty when
    they have no names, and a model then gets them by position (:mod:`.inputs`)."""

    features: FloatMatrix
    labels: npt.NDArray[np.float64]
    source: str
    feature_refs: tuple[str, ...] = ()

    @property
    def n_rows(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class Gates:
    metric: str
    error_metric: bool = False
    max_relative_degradation: float = 0.005
    latency_budget_ms: float = 0.0  # 0 = no budget
    max_latency_ratio: float = 1.5  # 0 = no ratio gate
    min_rows: int = 50


@dataclass(frozen=True)
class ModelScore:
    metrics: dict[str, float]
    p95_ms: float
    n_invalid: int = 0  # labelled holdout rows this model gave no finite prediction for


@dataclass(frozen=True)
class EvaluationResult:
    passed: bool
    reasons: tuple[str, ...]
    champion: ModelScore
    challenger: ModelScore
    n_rows: int
    source: str


def judge(gates: Gates, champion: ModelScore, challenger: ModelScore, n_rows: int) -> tuple[bool, list[str]]:
    """Applies the gates; returns (passed, one reason per gate, failures first)."""
    failures: list[str] = []
    passes: list[str] = []
    if n_rows < gates.min_rows:
        failures.append(
            f"holdout has {n_rows} labelled rows both models answer, the gates need {gates.min_rows}"
        )
    _answers_gate(champion, challenger, passes, failures)
    ours = challenger.metrics.get(gates.metric, math.nan)
    theirs = champion.metrics.get(gates.metric, math.nan)
    if math.isnan(ours):
        failures.append(f"challenger {gates.metric} is undefined on the holdout")
    elif math.isnan(theirs):
        failures.append(
            f"champion {gates.metric} is undefined on the holdout: nothing to compare the challenger's "
            f"{ours:.4g} with"
        )
    else:
        slack = gates.max_relative_degradation * abs(theirs)
        bound = theirs + slack if gates.error_metric else theirs - slack
        ok = ours <= bound if gates.error_metric else ours >= bound
        relation = "<=" if gates.error_metric else ">="
        text = (
            f"{gates.metric}: challenger {ours:.4g} vs champion {theirs:.4g} "
            f"(needs {relation} {bound:.4g}, {gates.max_relative_degradation:.2%} tolerance)"
        )
        (passes if ok else failures).append(text)
    if gates.latency_budget_ms > 0:
        ok = challenger.p95_ms <= gates.latency_budget_ms
        text = f"p95 latency {challenger.p95_ms:.3f} ms vs budget {gates.latency_budget_ms:g} ms"
        (passes if ok else failures).append(text)
    if gates.max_latency_ratio > 0 and champion.p95_ms > 0:
        ratio = challenger.p95_ms / champion.p95_ms
        ok = ratio <= gates.max_latency_ratio
        text = f"p95 latency ratio {ratio:.2f} vs champion (max {gates.max_latency_ratio:g})"
        (passes if ok else failures).append(text)
    return not failures, failures + passes


def _answers_gate(
    champion: ModelScore, challenger: ModelScore, passes: list[str], failures: list[str]
) -> None:
    """Fails a challenger that leaves more rows unanswered than the champion; says nothing when both
    answer every row."""
    if champion.n_invalid == 0 and challenger.n_invalid == 0:
        return
    text = (
        f"no finite prediction on {challenger.n_invalid} holdout rows (champion: {champion.n_invalid}); "
        "rows either model leaves unanswered are left out of the metrics"
    )
    (failures if challenger.n_invalid > champion.n_invalid else passes).append(text)


def evaluate(
    champion_onnx: bytes,
    challenger_onnx: bytes,
    holdout: Holdout,
    gates: Gates,
    monitor: mpb.MonitorConfig,
    latency_rows: int = DEFAULT_LATENCY_ROWS,
    *,
    champion_refs: Sequence[str] = (),
    challenger_refs: Sequence[str] = (),
) -> EvaluationResult:
    """Scores both models on ``holdout`` (task, positive class and decision threshold from the
    deployment's monitor config) and applies the gates. Each model gets the holdout's columns its
    feature refs name (``*_refs``: the version's ``feature_refs``; :func:`.inputs.model_inputs`, which
    raises ``FailedPrecondition`` when the holdout lacks one of its features)."""
    inputs = (
        model_inputs(holdout.features, holdout.feature_refs, champion_refs, "champion"),
        model_inputs(holdout.features, holdout.feature_refs, challenger_refs, "challenger"),
    )
    champion, challenger = _session(champion_onnx), _session(challenger_onnx)
    outputs = _output(champion, monitor, "champion"), _output(challenger, monitor, "challenger")
    answers = [
        _answers(s, o, x, holdout.labels, monitor)
        for s, o, x in zip((champion, challenger), outputs, inputs, strict=True)
    ]
    labelled = np.isfinite(holdout.labels)
    answered = [np.isfinite(predicted) for predicted, _ in answers]
    scored = labelled & answered[0] & answered[1]
    metrics = [
        window_metrics(monitor, holdout.labels[scored], predicted[scored], scores[scored])
        for predicted, scores in answers
    ]
    invalid = [int(np.count_nonzero(labelled & ~ok)) for ok in answered]
    latencies = _latencies(
        (champion, outputs[0], inputs[0]), (challenger, outputs[1], inputs[1]), latency_rows
    )
    champion_score = ModelScore(metrics[0], latencies[0], invalid[0])
    challenger_score = ModelScore(metrics[1], latencies[1], invalid[1])
    passed, reasons = judge(gates, champion_score, challenger_score, int(np.count_nonzero(scored)))
    return EvaluationResult(
        passed, tuple(reasons), champion_score, challenger_score, holdout.n_rows, holdout.source
    )


def _session(model: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _output(session: ort.InferenceSession, monitor: mpb.MonitorConfig, which: str) -> str:
    """The output the monitor would read from this model's logged answers."""
    names = [output.name for output in session.get_outputs()]
    name = prediction_output(monitor, names)
    if name not in names:
        raise FailedPrecondition(
            f"the {which} model has no output {name!r}, which the monitor config of deployment "
            f"{monitor.deployment!r} names as its prediction output; "
            f"its outputs: {', '.join(names) or 'none'}"
        )
    return name


def _run(session: ort.InferenceSession, features: FloatMatrix, output: str) -> npt.NDArray[np.generic]:
    spec = session.get_inputs()[0]
    dtype = np.float64 if spec.type == "tensor(double)" else np.float32
    return np.asarray(session.run([output], {spec.name: features.astype(dtype)})[0])


def _answers(
    session: ort.InferenceSession,
    output: str,
    features: FloatMatrix,
    labels: npt.NDArray[np.float64],
    monitor: mpb.MonitorConfig,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``(predictions, positive-class scores)`` of the model on every holdout row (``features``: its
    input), as the monitor derives them from logged outputs (NaN where the model's answer is not finite)."""
    n_rows = int(labels.shape[0])
    if n_rows == 0:
        return np.empty(0), np.empty(0)
    raw = _run(session, features, output)
    is_label = np.full(n_rows, holds_class_codes(raw.dtype), dtype=np.bool_)
    rows = np.asarray(raw, dtype=np.float64).reshape(n_rows, -1).tolist()
    classes = [_classes(session)] * n_rows
    predicted, scores = derive(monitor, rows, is_label, classes)
    # As the monitor leaves them out: score columns whose labels cannot be known (no classes, and a label
    # that is no column index) would be scored as if the index were the label.
    left_out = unmappable(monitor, rows, is_label, labels, classes)
    predicted[left_out] = np.nan
    scores[left_out] = np.nan
    return predicted, scores


def _classes(session: ort.InferenceSession) -> Classes | None:
    """The label value of each of the model's score columns, from its ``aether.classes`` metadata (None
    when it has none, or they are not numbers): a classifier trained on labels {1, 2} answers columns 0
    and 1, and without them its argmax was compared with the label as it is, so a perfect model scored 0."""
    declared = declared_classes(session)
    return class_values(declared) if declared is not None else None


def _latencies(
    champion: tuple[ort.InferenceSession, str, FloatMatrix],
    challenger: tuple[ort.InferenceSession, str, FloatMatrix],
    rows: int,
) -> tuple[float, float]:
    """p95 single-row latency (ms) of each model (session, prediction output, its input of the holdout's
    rows), measured alternately on the same rows."""
    n = min(rows, champion[2].shape[0], challenger[2].shape[0])
    if n == 0:
        return 0.0, 0.0
    for session, output, features in (champion, challenger):
        _run(session, features[:1], output)  # warm-up
    rounds: tuple[list[float], list[float]] = ([], [])
    for _ in range(LATENCY_ROUNDS):
        timings: tuple[list[float], list[float]] = ([], [])
        for i in range(n):
            pair = ((champion, timings[0]), (challenger, timings[1]))
            for (session, output, features), out in pair if i % 2 == 0 else pair[::-1]:
                start = time.perf_counter()
                _run(session, features[i : i + 1], output)
                out.append((time.perf_counter() - start) * 1e3)
        for out, p95s in zip(timings, rounds, strict=True):
            p95s.append(float(np.percentile(out, 95)))
    return float(np.median(rounds[0])), float(np.median(rounds[1]))
