"""How ``aetherctl monitor show|configure`` print a deployment's monitor config for people: a line saying
whether it is monitored, then one row per setting, in words (``--json`` prints the message whole, as the
other commands do). Both commands printed JSON only, unlike every other command."""

from __future__ import annotations

from typing import TextIO

from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.cli import output

# Enum values by the names the configure flags take (the effective config the server sends has them set;
# an unset one is the documented default, named so too).
_TESTS = {pb.DRIFT_TEST_UNSPECIFIED: "psi", pb.DRIFT_TEST_PSI: "psi", pb.DRIFT_TEST_JSD: "jsd",
          pb.DRIFT_TEST_KS: "ks", pb.DRIFT_TEST_WASSERSTEIN: "wasserstein"}  # fmt: skip
_CORRECTIONS = {
    pb.MULTIPLE_TESTING_CORRECTION_UNSPECIFIED: "Benjamini-Hochberg",
    pb.MULTIPLE_TESTING_CORRECTION_BENJAMINI_HOCHBERG: "Benjamini-Hochberg",
    pb.MULTIPLE_TESTING_CORRECTION_BONFERRONI: "Bonferroni",
    pb.MULTIPLE_TESTING_CORRECTION_NONE: "no",
}
_TASKS = {
    pb.TASK_TYPE_UNSPECIFIED: "none (no quality metrics)",
    pb.TASK_TYPE_CLASSIFICATION: "classification",
    pb.TASK_TYPE_REGRESSION: "regression",
}


def print_config(config: pb.MonitorConfig, out: TextIO) -> None:
    state = "disabled (no drift windows or quality alerts)" if config.disabled else "enabled"
    out.write(f"monitor of deployment {config.deployment}: {state}\n")
    out.write(output.table(("SETTING", "VALUE"), _rows(config)) + "\n")


def _rows(config: pb.MonitorConfig) -> list[tuple[str, str]]:
    rows = [
        ("drift test", _drift_test(config)),
        ("drift windows", _drift_windows(config)),
        ("task", _TASKS.get(config.task, str(config.task))),
    ]
    if config.task != pb.TASK_TYPE_UNSPECIFIED:
        rows += [
            ("predictions", _predictions(config)),
            ("quality windows", _quality_windows(config)),
            ("alert", _alert(config)),
        ]
    rows += [
        ("webhook", config.webhook_url or "none set: the control plane's AETHER_MONITOR_WEBHOOK_URL, if any"),
        ("updated", _updated(config)),
    ]
    return rows


def _drift_test(config: pb.MonitorConfig) -> str:
    test = _TESTS.get(config.test, str(config.test))
    threshold = f", threshold {config.threshold:g}" if config.HasField("threshold") else ""
    correction = _CORRECTIONS.get(config.correction, str(config.correction))
    share = (
        f"; the dataset drifts at {config.drift_share:.0%} of features"
        if config.HasField("drift_share")
        else ""
    )
    return f"{test}{threshold}, {correction} correction{share}"


def _drift_windows(config: pb.MonitorConfig) -> str:
    if config.window_kind == pb.WINDOW_KIND_TIME:
        span = f"{config.window_seconds:g} s of prediction time"
    else:
        span = f"{config.window_rows} rows"
    return f"every {span}; a feature needs {config.min_samples} values to be scored"


def _predictions(config: pb.MonitorConfig) -> str:
    source = (
        f"output {config.prediction_output!r}" if config.prediction_output else "the model's first output"
    )
    if config.task != pb.TASK_TYPE_CLASSIFICATION:
        return source
    return (
        f"{source}; positive class {config.positive_class}, decision threshold {config.decision_threshold:g}"
    )


def _quality_windows(config: pb.MonitorConfig) -> str:
    width, step = config.performance_window_seconds, config.performance_step_seconds
    sliding = f", starting every {step:g} s (sliding)" if 0 < step < width else ""
    return f"{width:g} s{sliding}; scored from {config.min_labels} labels"


def _alert(config: pb.MonitorConfig) -> str:
    metric = config.alert_metric or "-"
    if not config.HasField("alert_threshold"):
        return f"none (no threshold for {metric})"
    # Imported here, as in monitor_config: the monitoring config imports the metadata database's modules.
    from control_plane.monitoring.config import ERROR_METRICS

    direction = ">" if metric in ERROR_METRICS else "<"  # as the monitor judges it (past_threshold)
    return f"when {metric} {direction} {config.alert_threshold:g}"


def _updated(config: pb.MonitorConfig) -> str:
    if not config.revision and not config.updated_at_us:
        return "never: the defaults"
    by = f" by {config.updated_by}" if config.updated_by else ""
    return f"{output.timestamp(config.updated_at_us)}{by} (revision {config.revision})"
