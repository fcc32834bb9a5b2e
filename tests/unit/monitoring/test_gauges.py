"""The monitor's gauges show the newest quality window and drift report only: a metric or feature that
the newest one lacks has no series, rather than the value an older one left (on a real Prometheus
registry; the last test through the quality check, on a real database)."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry

from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.monitoring.gauges import MonitorGauges, gauges_for
from tests.unit.monitoring.world import COMPLETE_WINDOW_START_US, HOUR_US, World, classify, predicted


def performance(registry: CollectorRegistry, deployment: str, metric: str) -> float | None:
    labels = {"deployment": deployment, "metric": metric}
    return registry.get_sample_value("aether_model_performance", labels)


def feature(registry: CollectorRegistry, gauge: str, name: str) -> float | None:
    labels = {"deployment": "fraud", "feature": name}
    return registry.get_sample_value(f"aether_drift_feature_{gauge}", labels)


def test_a_metric_the_newest_window_lacks_loses_its_series() -> None:
    # Precision, recall and AUC undefined on the newest window (no positive label or prediction): the
    # gauge went on showing the older window's 1.0 next to the newest accuracy.
    registry = CollectorRegistry()
    gauges = MonitorGauges(registry)
    older = pb.PerformanceWindow(end_us=1)
    older.metrics.update({"accuracy": 1.0, "precision": 1.0, "recall": 1.0, "auc": 1.0})
    gauges.observe_performance("fraud", older)
    gauges.observe_performance("other", older)
    newest = pb.PerformanceWindow(end_us=2)
    newest.metrics["accuracy"] = 0.75
    gauges.observe_performance("fraud", newest)
    assert performance(registry, "fraud", "accuracy") == 0.75
    assert [performance(registry, "fraud", m) for m in ("precision", "recall", "auc")] == [None] * 3
    assert performance(registry, "other", "precision") == 1.0  # another deployment's series stay
    gauges.observe_performance("fraud", older)  # defined again: shown again
    assert performance(registry, "fraud", "precision") == 1.0


def test_one_versions_report_keeps_the_features_another_version_of_the_deployment_shows() -> None:
    # Reports come per model version and the series per deployment: a canary's report without a
    # reference profile (no features) removed the primary's drifted "amount", and an alert on it.
    registry = CollectorRegistry()
    gauges = MonitorGauges(registry)
    served = {("m", 1), ("m", 2)}  # the plan: primary v1, canary v2
    primary = pb.DriftReport(deployment="fraud", model_name="m", version=1, status=pb.DRIFT_STATUS_DRIFT)
    primary.features.add(name="amount", score=0.9, drifted=True)
    gauges.observe_report(primary, served)
    canary = pb.DriftReport(
        deployment="fraud", model_name="m", version=2, status=pb.DRIFT_STATUS_NO_REFERENCE
    )
    gauges.observe_report(canary, served)
    assert feature(registry, "drifted", "amount") == 1.0
    fewer = pb.DriftReport(deployment="fraud", model_name="m", version=1, status=pb.DRIFT_STATUS_NO_DRIFT)
    gauges.observe_report(fewer, served)  # no version shows "amount" now
    assert feature(registry, "drifted", "amount") is None


def test_a_report_that_scores_no_feature_clears_the_per_feature_series() -> None:
    # After a SCHEMA_MISMATCH (or no-reference) report the feature still read drifted (1) with score 0.9,
    # while aether_drift_detected said -1 (not scored).
    registry = CollectorRegistry()
    gauges = MonitorGauges(registry)
    scored = pb.DriftReport(deployment="fraud", status=pb.DRIFT_STATUS_DRIFT, drifted_share=0.5)
    scored.features.add(name="amount", score=0.9, drifted=True, missing_current=2)
    scored.features.add(name="age", score=0.01, drifted=False)
    gauges.observe_report(scored)
    assert feature(registry, "drifted", "amount") == 1.0 and feature(registry, "missing", "amount") == 2.0
    fewer = pb.DriftReport(deployment="fraud", status=pb.DRIFT_STATUS_NO_DRIFT)
    fewer.features.add(name="age", score=0.02, drifted=False)
    gauges.observe_report(fewer)
    assert [feature(registry, g, "amount") for g in ("score", "drifted", "missing")] == [None] * 3
    assert feature(registry, "score", "age") == 0.02
    share = {"deployment": "fraud"}
    assert registry.get_sample_value("aether_drift_share", share) == 0.0  # one scored, none drifted
    gauges.observe_report(pb.DriftReport(deployment="fraud", status=pb.DRIFT_STATUS_SCHEMA_MISMATCH))
    assert registry.get_sample_value("aether_drift_detected", share) == -1.0
    assert registry.get_sample_value("aether_drift_share", share) is None  # 0/0: not "no drift"
    assert [feature(registry, g, n) for g in ("score", "drifted") for n in ("amount", "age")] == [None] * 4
    # A feature in the report with too few values keeps its series, with a NaN score (not scored).
    insufficient = pb.DriftReport(deployment="fraud", status=pb.DRIFT_STATUS_INSUFFICIENT_DATA)
    insufficient.features.add(name="age", score=math.nan, drifted=False)
    gauges.observe_report(insufficient)
    score = feature(registry, "score", "age")
    assert score is not None and math.isnan(score)


async def test_a_window_whose_predictions_were_all_nan_clears_the_performance_gauge(world: World) -> None:
    # The newest window has enough labels but no metric (every prediction NaN): the accuracy an older
    # window left must not stand for it.
    classify(world.sessions, alert_threshold=0.1)
    start = COMPLETE_WINDOW_START_US
    predicted(world.sessions, "q", start, 1.0, [1] * 20)
    monitor = world.monitor()
    await monitor.check_performance()
    assert performance(world.registry, "zzz", "accuracy") == 1.0
    predicted(world.sessions, "n", start + HOUR_US, math.nan, [1] * 20)
    (alerted,) = await monitor.check_performance()
    assert alerted.start_us == start + HOUR_US and not alerted.metrics
    assert performance(world.registry, "zzz", "accuracy") is None


def drift_report(version: int, status: pb.DriftStatus, share: float, **drifted: bool) -> pb.DriftReport:
    report = pb.DriftReport(
        deployment="fraud", model_name="m", version=version, status=status, drifted_share=share
    )
    for name, is_drifted in drifted.items():
        report.features.add(name=name, score=0.9 if is_drifted else 0.1, drifted=is_drifted)
    return report


def deployment_gauge(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value(name, {"deployment": "fraud"})


def test_a_report_of_a_version_that_left_the_plan_sets_none_of_the_deployments_series() -> None:
    # Version 1 was replaced by version 2; v1's half-full window was closed (idle) and reported after the
    # plan change: its DRIFT report put its drifted features back and set the deployment's share and
    # "detected" over the NO_DRIFT of version 2, the version that serves.
    registry = CollectorRegistry()
    gauges = MonitorGauges(registry)
    serves_v2 = {("m", 2)}
    gauges.observe_report(drift_report(2, pb.DRIFT_STATUS_NO_DRIFT, 0.0, f=False), serves_v2)
    gauges.observe_report(drift_report(1, pb.DRIFT_STATUS_DRIFT, 1.0, f=True, g=True), serves_v2)
    assert deployment_gauge(registry, "aether_drift_detected") == 0.0
    assert deployment_gauge(registry, "aether_drift_share") == 0.0
    assert feature(registry, "drifted", "f") == 0.0 and feature(registry, "score", "f") == 0.1
    assert feature(registry, "drifted", "g") is None


def test_the_deployments_drift_series_aggregate_the_newest_report_of_each_version_it_serves() -> None:
    # A canary without a reference profile reports in turn with the primary that drifted: its
    # NO_REFERENCE report removed the share and set "detected" -1 for the whole deployment, so both
    # flapped between the primary's drift and "not scored" as the versions reported.
    registry = CollectorRegistry()
    gauges = MonitorGauges(registry)
    served = {("m", 1), ("m", 2)}  # the plan: primary v1, canary v2
    primary = drift_report(1, pb.DRIFT_STATUS_DRIFT, 0.5, f=True, g=False)
    primary.prediction_status = pb.DRIFT_STATUS_DRIFT
    canary = drift_report(2, pb.DRIFT_STATUS_NO_REFERENCE, 0.0)
    canary.prediction_status = pb.DRIFT_STATUS_NO_REFERENCE
    for report in (primary, canary, primary, canary):
        gauges.observe_report(report, served)
        assert deployment_gauge(registry, "aether_drift_detected") == 1.0
        assert deployment_gauge(registry, "aether_drift_share") == 0.5
        assert deployment_gauge(registry, "aether_prediction_drift_detected") == 1.0
    # The canary scored now, without drift: the primary's drift still shows, its share the larger.
    calm = drift_report(2, pb.DRIFT_STATUS_NO_DRIFT, 0.25, f=False, g=False, h=True)
    calm.prediction_status = pb.DRIFT_STATUS_NO_DRIFT
    gauges.observe_report(calm, served)
    assert deployment_gauge(registry, "aether_drift_detected") == 1.0
    assert deployment_gauge(registry, "aether_drift_share") == 0.5
    assert deployment_gauge(registry, "aether_prediction_drift_detected") == 1.0
    # The primary calm as well: no served version drifted, the largest share is the canary's.
    calmer = drift_report(1, pb.DRIFT_STATUS_NO_DRIFT, 0.0, f=False, g=False)
    calmer.prediction_status = pb.DRIFT_STATUS_INSUFFICIENT_DATA
    gauges.observe_report(calmer, served)
    assert deployment_gauge(registry, "aether_drift_detected") == 0.0
    assert deployment_gauge(registry, "aether_drift_share") == 0.25
    assert deployment_gauge(registry, "aether_prediction_drift_detected") == 0.0
    # The canary rolled back: only the primary counts, whatever it last reported.
    gauges.observe_report(drift_report(1, pb.DRIFT_STATUS_SCHEMA_MISMATCH, 0.0), {("m", 1)})
    assert deployment_gauge(registry, "aether_drift_detected") == -1.0
    assert deployment_gauge(registry, "aether_drift_share") is None
    assert deployment_gauge(registry, "aether_prediction_drift_detected") == -1.0


def test_a_feature_one_of_two_served_versions_drifted_on_stays_drifted_as_they_report_in_turn() -> None:
    # A 50/50 A/B plan: v1 drifts on "amount", v2 does not. Each report overwrote the feature's series,
    # so aether_drift_feature_drifted alternated 1/0 and an alert on "== 1 for 10m" never fired.
    registry = CollectorRegistry()
    gauges = MonitorGauges(registry)
    served = {("m", 1), ("m", 2)}
    drifted = drift_report(1, pb.DRIFT_STATUS_DRIFT, 1.0, amount=True)
    drifted.features[0].missing_current = 3
    calm = drift_report(2, pb.DRIFT_STATUS_NO_DRIFT, 0.0, amount=False, age=False)
    calm.features[0].missing_current = 7
    gauges.observe_report(drifted, served)
    for report in (calm, drifted, calm, drifted):
        gauges.observe_report(report, served)
        assert feature(registry, "drifted", "amount") == 1.0
        assert feature(registry, "score", "amount") == 0.9  # the drifted report's, which decides
        assert feature(registry, "missing", "amount") == 7.0  # the largest
    assert feature(registry, "drifted", "age") == 0.0 and feature(registry, "score", "age") == 0.1
    # v1 calm as well: nothing drifted; the score is the newest report's.
    later = drift_report(1, pb.DRIFT_STATUS_NO_DRIFT, 0.0, amount=False)
    later.features[0].score = 0.2
    gauges.observe_report(later, served)
    assert feature(registry, "drifted", "amount") == 0.0 and feature(registry, "score", "amount") == 0.2


def test_each_new_registry_gets_gauges_of_its_own_even_where_a_freed_one_lived() -> None:
    """Tests make a registry per control plane; CPython gives a new one the address (the id) of one just
    freed, and gauges shared by id were then the freed registry's: the new one showed none of them. (It
    catches that only where an address is reused, which CPython does for most of these registries, though
    not for all in every process: a count of reuses is not asserted.)"""
    for _ in range(20):  # no gc.collect(): in a large test process 50 of them ran past the 120 s timeout
        registry = CollectorRegistry()
        gauges_for(registry)
        assert registry.get_sample_value("aether_feedback_orphaned") == 0.0
        del registry
