"""What an alert says: the JSON objects :class:`~.alerts.Alerter` sends for a stored drift report and for
a degraded quality window (plain data in, plain data out), and the record that a quality window alerted
once.

The payload fields are documented in :mod:`.alerts`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.db import write_session
from control_plane.monitoring.performance import past_threshold
from control_plane.monitoring.tables import PerformanceAlertRow


def drift_alerts(report: pb.DriftReport) -> list[dict[str, Any]]:
    """The alerts a stored drift report raises: one for data drift and one for prediction drift, each
    only when the report found it."""
    common = {
        "deployment": report.deployment,
        "model": report.model_name,
        "version": report.version,
        "report_id": report.id,
        "window_start_us": report.window_start_us,
        "window_end_us": report.window_end_us,
        "n_rows": report.n_rows,
        "test": pb.DriftTest.Name(report.test).removeprefix("DRIFT_TEST_").lower(),
        "threshold": report.threshold,
    }
    alerts: list[dict[str, Any]] = []
    if report.status == pb.DRIFT_STATUS_DRIFT:
        drifted = [{"name": f.name, "score": f.score} for f in report.features if f.drifted]
        message = (
            f"data drift on deployment {report.deployment} ({report.model_name} v{report.version}): "
            f"{len(drifted)} of {_scored(report.features)} features drifted ({report.drifted_share:.0%})"
        )
        alerts.append(
            {
                "kind": "data_drift",
                "message": message,
                **common,
                "drifted_share": report.drifted_share,
                "drift_share_threshold": report.drift_share_threshold,
                "drifted_features": drifted,
            }
        )
    if report.prediction_status == pb.DRIFT_STATUS_DRIFT:
        drifted = [{"name": f.name, "score": f.score} for f in report.outputs if f.drifted]
        served = f"{report.model_name} v{report.version}"
        message = f"prediction drift on deployment {report.deployment} ({served})"
        alerts.append({"kind": "prediction_drift", "message": message, **common, "drifted_outputs": drifted})
    return alerts


INVALID_PREDICTIONS = "invalid_predictions"


def _alerted_on(config: pb.MonitorConfig, window: pb.PerformanceWindow) -> tuple[str, float, float]:
    """``(metric, value, threshold)`` of a DEGRADED window: its alert metric when that is past the
    threshold, else its count of labelled predictions that were not finite numbers (threshold 0)."""
    if past_threshold(config, window.metrics):
        return config.alert_metric, window.metrics[config.alert_metric], config.alert_threshold
    return INVALID_PREDICTIONS, float(window.n_invalid_predictions), 0.0


def performance_alert(config: pb.MonitorConfig, window: pb.PerformanceWindow) -> dict[str, Any]:
    """The alert of a DEGRADED quality window (see :func:`.performance.degraded`)."""
    metric, value, threshold = _alerted_on(config, window)
    invalid = (
        f"; {window.n_invalid_predictions} predictions were missing or not finite numbers"
        if window.n_invalid_predictions
        else ""
    )
    if metric == INVALID_PREDICTIONS:
        detail = f"{window.n_invalid_predictions} of {window.n_labels} labelled predictions were missing or "
        detail += "not finite numbers"
    else:
        detail = (
            f"{metric} {value:.4g} past the threshold {threshold:.4g} ({window.n_labels} labels{invalid})"
        )
    return {
        "kind": "performance_degradation",
        "message": f"model quality degraded on deployment {config.deployment}: {detail}",
        "deployment": config.deployment,
        "metric": metric,
        "value": value,
        "threshold": threshold,
        "window_start_us": window.start_us,
        "window_end_us": window.end_us,
        "n_labels": window.n_labels,
        "n_predictions": window.n_predictions,
        "n_invalid_predictions": window.n_invalid_predictions,
        "metrics": dict(window.metrics),
    }


def claim_performance_alert(
    sessions: sessionmaker[Session], config: pb.MonitorConfig, window: pb.PerformanceWindow
) -> bool:
    """Records that the window alerted; False when it had alerted before (each window alerts once,
    across restarts)."""
    with write_session(sessions) as session:
        if session.get(PerformanceAlertRow, (config.deployment, window.start_us)) is not None:
            return False
        metric, value, threshold = _alerted_on(config, window)
        session.add(
            PerformanceAlertRow(
                deployment=config.deployment,
                window_start_us=window.start_us,
                metric=metric,
                value=value,
                threshold=threshold,
                details=f"{window.n_labels} labels of {window.n_predictions} predictions",
                alerted_at_us=time.time_ns() // 1000,
            )
        )
    return True


def _scored(features: Sequence[pb.FeatureDrift]) -> int:
    """Features scored against the reference, those ``drifted_share`` is a share of: not those listed as
    not compared (unpaired by name), nor those with too few values (insufficient). Counted with the
    insufficient ones, the message said "1 of 3 features drifted (50%)"."""
    return sum(not f.not_compared and not f.insufficient for f in features)
