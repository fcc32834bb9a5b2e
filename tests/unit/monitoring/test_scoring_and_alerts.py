"""The monitor's pure parts: a closed window scored against its references, and the alerts a report or a
degraded quality window raises."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import monitoring_pb2 as pb
from clients.errors import InvalidArgument
from control_plane.monitoring.alert_payloads import claim_performance_alert, drift_alerts, performance_alert
from control_plane.monitoring.config import MAX_WINDOW_SECONDS, default_config, effective, unusable
from control_plane.monitoring.scoring import output_names, score_window
from control_plane.monitoring.windows import Batch, TumblingWindows, Window
from kernels.drift import build_reference_profile
from tests.unit.monitoring.world import T0

KEY = ("ranker", "mlp", 3)


def _window(features: np.ndarray, outputs: np.ndarray | None) -> Window:
    return Window(1_000_000, 2_000_000, features, outputs)


def test_a_window_from_the_reference_distribution_does_not_drift_and_a_shifted_one_does() -> None:
    rng = np.random.default_rng(7)
    reference = (build_reference_profile(rng.standard_normal((5000, 2))), ("a", "b"))
    config = default_config("ranker")
    same, _ = score_window(KEY, _window(rng.standard_normal((2000, 2)), None), config, reference, None)
    shifted, _ = score_window(
        KEY, _window(rng.standard_normal((2000, 2)) + 3.0, None), config, reference, None
    )
    assert same.status == pb.DRIFT_STATUS_NO_DRIFT
    assert shifted.status == pb.DRIFT_STATUS_DRIFT
    assert [f.name for f in shifted.features] == ["a", "b"] and all(f.drifted for f in shifted.features)
    assert (shifted.deployment, shifted.model_name, shifted.version, shifted.n_rows) == (
        "ranker",
        "mlp",
        3,
        2000,
    )


def test_without_any_reference_the_report_says_so_and_a_large_window_makes_the_output_baseline() -> None:
    rng = np.random.default_rng(8)
    config = default_config("ranker")
    outputs = rng.random((config.min_samples, 2))
    report, baseline = score_window(
        KEY, _window(rng.standard_normal((config.min_samples, 1)), outputs), config, None, None, None, "score"
    )
    assert report.status == pb.DRIFT_STATUS_NO_REFERENCE
    assert report.prediction_status == pb.DRIFT_STATUS_NO_REFERENCE
    assert baseline is not None and baseline[1] == ("score[0]", "score[1]")
    small, none = score_window(KEY, _window(outputs[:5, :1], outputs[:5]), config, None, None, None, "score")
    assert none is None and small.prediction_status == pb.DRIFT_STATUS_NO_REFERENCE
    # The baseline learned earlier scores later windows' predictions; a shifted output drifts.
    later, again = score_window(
        KEY, _window(outputs[:, :1], outputs + 5.0), config, None, None, baseline, "score"
    )
    assert again is None and later.prediction_status == pb.DRIFT_STATUS_DRIFT


def test_output_names_name_each_column_of_a_wide_output() -> None:
    assert output_names("p", np.zeros((3, 1))) == ("p",)
    assert output_names("p", np.zeros((3, 3))) == ("p[0]", "p[1]", "p[2]")


def test_a_report_alerts_once_per_kind_of_drift_it_found() -> None:
    report = pb.DriftReport(
        id=12, deployment="ranker", model_name="mlp", version=3, test=pb.DRIFT_TEST_PSI, threshold=0.2,
        status=pb.DRIFT_STATUS_DRIFT, drifted_share=0.5, prediction_status=pb.DRIFT_STATUS_NO_DRIFT,
    )  # fmt: skip
    report.features.add(name="a", score=0.9, drifted=True)
    report.features.add(name="b", score=0.01, drifted=False)
    (alert,) = drift_alerts(report)
    assert alert["kind"] == "data_drift" and alert["test"] == "psi" and alert["report_id"] == 12
    assert alert["drifted_features"] == [{"name": "a", "score": 0.9}]
    assert "1 of 2 features drifted (50%)" in alert["message"]
    report.prediction_status = pb.DRIFT_STATUS_DRIFT
    report.outputs.add(name="score", score=0.7, drifted=True)
    assert [a["kind"] for a in drift_alerts(report)] == ["data_drift", "prediction_drift"]
    report.status = report.prediction_status = pb.DRIFT_STATUS_NO_DRIFT
    assert drift_alerts(report) == []


def test_a_data_drift_alert_counts_the_features_its_share_is_of() -> None:
    """The share is of the scored features; the count said "of" every compared one, the insufficient
    ones too: "1 of 3 features drifted (50%)"."""
    report = pb.DriftReport(
        deployment="ranker", model_name="mlp", version=3, status=pb.DRIFT_STATUS_DRIFT, drifted_share=0.5
    )
    report.features.add(name="a", score=0.9, drifted=True)
    report.features.add(name="b", score=0.01, drifted=False)
    report.features.add(name="c", score=math.nan, insufficient=True)
    report.features.add(name="d", score=math.nan, not_compared="no logged column of this name")
    (alert,) = drift_alerts(report)
    assert "1 of 2 features drifted (50%)" in alert["message"]


def test_a_degraded_window_alert_names_the_metric_its_value_and_the_threshold() -> None:
    config = pb.MonitorConfig(deployment="ranker", alert_metric="accuracy", alert_threshold=0.8)
    window = pb.PerformanceWindow(start_us=10, end_us=20, n_labels=40, n_predictions=50)
    window.metrics["accuracy"] = 0.61
    alert = performance_alert(config, window)
    assert alert["kind"] == "performance_degradation" and alert["value"] == 0.61
    assert alert["threshold"] == 0.8 and alert["metrics"] == {"accuracy": 0.61}
    assert "accuracy 0.61 past the threshold 0.8 (40 labels)" in alert["message"]


def test_a_window_degraded_by_predictions_that_are_not_finite_alerts_with_their_count(
    sessions: sessionmaker[Session],
) -> None:
    config = pb.MonitorConfig(deployment="ranker", alert_metric="mae", alert_threshold=5.0)
    window = pb.PerformanceWindow(
        start_us=10, end_us=20, n_labels=40, n_predictions=50, n_invalid_predictions=3
    )
    window.metrics["mae"] = 1.0  # within the threshold: the invalid predictions degrade it
    alert = performance_alert(config, window)
    assert alert["metric"] == "invalid_predictions" and alert["value"] == 3.0 and alert["threshold"] == 0.0
    assert "3 of 40 labelled predictions were missing or not finite numbers" in alert["message"]
    # Its metric undefined or within bounds, the window is claimed under the count (a KeyError before).
    del window.metrics["mae"]
    assert claim_performance_alert(sessions, config, window)
    assert not claim_performance_alert(sessions, config, window)
    window.metrics["mae"] = 9.0
    alert = performance_alert(config, window)
    assert alert["metric"] == "mae" and "3 predictions were missing or not finite" in alert["message"]


@pytest.mark.parametrize("seconds", [1e13, MAX_WINDOW_SECONDS * 1.001, math.inf, math.nan, -1.0])
def test_a_time_window_no_report_can_hold_is_refused(seconds: float) -> None:
    # Only "finite and positive" before: 1e13 s was stored, its windows ended past the int64 µs a report
    # holds, and every report of the deployment failed until its windows were dropped.
    config = pb.MonitorConfig(deployment="d", window_kind=pb.WINDOW_KIND_TIME, window_seconds=seconds)
    with pytest.raises(InvalidArgument, match=r"window_seconds must lie in \(0, 31622400\]"):
        effective(config)


def test_the_longest_time_window_the_config_accepts_can_be_reported() -> None:
    config = effective(
        pb.MonitorConfig(deployment="d", window_kind=pb.WINDOW_KIND_TIME, window_seconds=MAX_WINDOW_SECONDS)
    )
    windows = TumblingWindows("time", seconds=config.window_seconds)
    windows.add(Batch(T0, np.zeros((40, 3))))
    (window,) = windows.close_open()  # the version went idle
    report, _ = score_window(("d", "m", 1), window, config, None, None)
    assert report.window_end_us - report.window_start_us == MAX_WINDOW_SECONDS * 1_000_000


def test_a_stored_time_window_no_report_can_hold_makes_the_config_unusable() -> None:
    # As ConfigureMonitor stored it before window_seconds was bounded: disabled, said so, not failed on.
    stored = effective(pb.MonitorConfig(deployment="d", window_kind=pb.WINDOW_KIND_TIME))
    stored.window_seconds = 1e13
    assert "window_seconds 1e+13 is not in (0, 31622400]" in (unusable(stored) or "")
    stored.window_kind = pb.WINDOW_KIND_COUNT  # count windows never read it
    assert unusable(stored) is None
