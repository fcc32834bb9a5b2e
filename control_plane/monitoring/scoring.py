"""A closed drift window scored against its references: the :class:`pb.DriftReport` to store and, when
the prediction output has no reference yet, the baseline the window makes (plain data in, plain data out).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.monitoring.drift import DriftRule, evaluate
from control_plane.monitoring.windows import Window
from kernels.drift import ReferenceProfile, build_reference_profile

Key = tuple[str, str, int]  # deployment, model, version
Profile = tuple[ReferenceProfile, tuple[str, ...]]  # a profile and the names of its columns


def score_window(
    key: Key,
    window: Window,
    config: pb.MonitorConfig,
    features: Profile | None,
    outputs: Profile | None,
    learned_outputs: Profile | None = None,
    output_name: str = "",
    feature_dtype: str = "",
    output_dtype: str = "",
    logged_names: tuple[str, ...] = (),
) -> tuple[pb.DriftReport, Profile | None]:
    """The window's report and the prediction baseline it makes, if any.

    ``features`` and ``outputs`` are the version's registered reference profiles (None: none registered);
    ``learned_outputs`` is the baseline an earlier window made when no output profile was registered; it
    scores only a window of the same output (its names those :func:`output_names` gives ``output_name``,
    the output the window's predictions are of): the scores of one output compared with a baseline of
    another (the config came to name another ``prediction_output``) read as prediction drift, under the
    other's name. Without an output reference for the window the report's prediction status is
    ``NO_REFERENCE`` and a window with at least ``config.min_samples`` rows makes the baseline (named
    after ``output_name``). The caller keeps that baseline once the report is stored (in place of one of
    another output), so that a retried report scores the same way.
    ``feature_dtype`` and ``output_dtype``: the dtypes the model serves them in, when its signature says
    (both sides are compared rounded to it: :mod:`.drift`); ``""`` lets each window's own decide.
    ``logged_names``: the window's feature columns' names, the version's ``feature_refs`` (``()``: none),
    which the profile's features are paired with by name (:mod:`.columns`)."""
    deployment, model, version = key
    rule = DriftRule.of(config)
    report = pb.DriftReport(
        deployment=deployment,
        model_name=model,
        version=version,
        window_start_us=window.start_us,
        window_end_us=window.end_us,
        n_rows=window.n_rows,
        late_rows=window.late_rows,
        mismatched_rows=window.mismatched_rows,
        test=config.test,
        threshold=config.threshold,
        correction=config.correction,
        drift_share_threshold=config.drift_share,
        status=pb.DRIFT_STATUS_NO_REFERENCE,
    )
    if features is not None:
        verdict = evaluate(
            features[0], features[1], window.features, rule, feature_dtype or None, logged_names
        )
        report.status = verdict.status
        report.drifted_share = verdict.drifted_share
        report.features.extend(verdict.features)
    if window.outputs is None:
        return report, None
    names = output_names(output_name, window.outputs)
    learned = learned_outputs if learned_outputs is not None and learned_outputs[1] == names else None
    baseline = outputs or learned
    if baseline is not None:
        verdict = evaluate(baseline[0], baseline[1], window.outputs, rule, output_dtype or None)
        report.prediction_status = verdict.status
        report.outputs.extend(verdict.features)
        return report, None
    report.prediction_status = pb.DRIFT_STATUS_NO_REFERENCE
    if window.outputs.shape[0] < config.min_samples:
        return report, None
    return report, (build_reference_profile(window.outputs), names)


def output_names(name: str, outputs: npt.NDArray[np.float64]) -> tuple[str, ...]:
    """Column names of a prediction output: its name, or ``name[j]`` per column when it has several."""
    if outputs.shape[1] == 1:
        return (name,)
    return tuple(f"{name}[{j}]" for j in range(outputs.shape[1]))
