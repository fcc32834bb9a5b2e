"""The drift gauges after real monitor runs (a real control plane and Redis stream, reports scored against
registered reference profiles): a feature's series is gone once no model version the deployment serves
shows it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import model_registry_pb2 as mpb
from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.deployments.core import DeploymentManager
from control_plane.monitoring.profiles import register_reference_profile
from tests.integration.monitoring.conftest import Plane, Webhook, eventually, open_plane, record

T0 = 1_800_000_000_000_000
ROWS = 40  # a count window: at least 30 finite values per feature are scored
SCORE = np.array([[0.5]], dtype=np.float32)


def feature_drifted(plane: Plane, name: str) -> float | None:
    labels = {"deployment": "churn", "feature": name}
    return plane.gauges.get_sample_value("aether_drift_feature_drifted", labels)


def with_reference(plane: Plane, names: list[str]) -> int:
    """A new approved version of churn-model with a reference profile of ``names``."""
    version = plane.register_version("churn-model")
    # The review plane.deploy gives too: a decided version accepts only an exact repeat of its review.
    plane.registry.review("churn-model", version, mpb.APPROVED, "to monitor", actor="reviewer")
    reference = np.random.default_rng(version).normal(size=(500, len(names)))
    sessions = plane.server.context.sessions
    register_reference_profile(
        sessions, plane.registry.artifacts, "churn-model", version, reference, names, actor="trainer"
    )
    return version


def calm(version: int, names: int) -> np.ndarray:  # type: ignore[type-arg]
    """A window of ``ROWS`` rows spread evenly over the quantiles of ``version``'s reference (see
    :func:`with_reference`): it drifts on no test, whatever the seed."""
    reference = np.random.default_rng(version).normal(size=(500, names))
    return np.quantile(reference, (np.arange(ROWS) + 0.5) / ROWS, axis=0)


async def log_window(plane: Plane, version: int, first: int, features: np.ndarray) -> None:  # type: ignore[type-arg]
    records = [
        record(f"r-{first + i}", features[i : i + 1], {"score": SCORE}, T0 + first + i, version=version)
        for i in range(features.shape[0])
    ]
    await plane.log(records)


async def reports(plane: Plane) -> list[pb.DriftReport]:
    answer = await plane.stub.GetDriftReports(pb.GetDriftReportsRequest(deployment="churn"))
    return list(answer.reports)


async def test_a_version_replaced_in_the_plan_no_longer_shows_its_features(plane: Plane) -> None:
    # Version 1 scored "f"; version 2 replaced it (a promotion, a rollback) and has no "f": its series
    # stayed on /metrics for good, as version 1's last report still "showed" it.
    first = with_reference(plane, ["f", "g"])
    plane.deploy("churn", first)
    await plane.stub.ConfigureMonitor(
        pb.ConfigureMonitorRequest(config=pb.MonitorConfig(deployment="churn", window_rows=ROWS))
    )
    rng = np.random.default_rng(0)
    await log_window(plane, first, 0, rng.normal(size=(ROWS, 2)))

    async def reported(count: int) -> bool:
        return len(await reports(plane)) == count

    await eventually(lambda: reported(1))

    async def shown(name: str) -> bool:  # the report is stored before it is exported
        return feature_drifted(plane, name) is not None

    await eventually(lambda: shown("f"))
    assert feature_drifted(plane, "g") is not None

    second = with_reference(plane, ["g", "h"])
    variant = dpb.Variant(model_name="churn-model", version=second, role=dpb.VARIANT_ROLE_PRIMARY)
    DeploymentManager(plane.server.context.sessions, plane.registry).update(
        dpb.UpdateDeploymentRequest(name="churn", replace_variants=True, variants=[variant]),
        actor="operator",
    )
    await log_window(plane, second, 1000, rng.normal(size=(ROWS, 2)))
    await eventually(lambda: reported(2))
    newest = (await reports(plane))[0]
    assert (newest.version, [f.name for f in newest.features]) == (second, ["g", "h"])
    await eventually(lambda: shown("h"))
    assert feature_drifted(plane, "f") is None  # no version the deployment serves shows it
    assert feature_drifted(plane, "g") is not None and feature_drifted(plane, "h") is not None


async def test_the_drift_share_of_a_window_that_scored_no_feature_is_absent(plane: Plane) -> None:
    # Every feature of the window had too few finite values: the share of drifted features is 0/0, and
    # the gauge read 0, "nothing drifted", when nothing was measured.
    version = with_reference(plane, ["f", "g"])
    plane.deploy("churn", version)
    await plane.stub.ConfigureMonitor(
        pb.ConfigureMonitorRequest(config=pb.MonitorConfig(deployment="churn", window_rows=ROWS))
    )
    shifted = np.random.default_rng(0).normal(size=(ROWS, 2))
    shifted[:, 0] += 5.0
    await log_window(plane, version, 0, shifted)

    async def reported(count: int) -> bool:
        return len(await reports(plane)) == count

    await eventually(lambda: reported(1))
    share = {"deployment": "churn"}

    async def detected(value: float) -> bool:  # the report is stored before it is exported
        return plane.gauges.get_sample_value("aether_drift_detected", share) == value

    await eventually(lambda: detected(1.0))
    scored = plane.gauges.get_sample_value("aether_drift_share", share)
    assert scored is not None and scored >= 0.5  # "f", shifted by 5 standard deviations, drifted

    await log_window(plane, version, 1000, np.full((ROWS, 2), np.nan))
    await eventually(lambda: reported(2))
    newest = (await reports(plane))[0]
    assert newest.status == pb.DRIFT_STATUS_INSUFFICIENT_DATA
    assert all(f.insufficient for f in newest.features)
    await eventually(lambda: detected(-1.0))
    assert plane.gauges.get_sample_value("aether_drift_share", share) is None


async def test_a_window_reported_after_its_version_left_the_plan_is_stored_not_shown_nor_alerted(
    plane: Plane, webhook: Webhook, caplog: pytest.LogCaptureFixture
) -> None:
    # Version 1 was replaced by version 2 with half a window open; its window closed after the plan
    # change (the rows of requests it still answered, or the idle timeout) and its DRIFT report set
    # aether_drift_detected 1, the share and its drifted feature over version 2's NO_DRIFT, and alerted
    # drift on a version that serves nothing.
    caplog.set_level(logging.INFO, logger="aether.control_plane.monitoring")
    first = with_reference(plane, ["f", "g"])
    plane.deploy("churn", first)
    config = pb.MonitorConfig(deployment="churn", window_rows=ROWS, webhook_url=webhook.url)
    await plane.stub.ConfigureMonitor(pb.ConfigureMonitorRequest(config=config))
    rng = np.random.default_rng(0)
    shifted = rng.normal(size=(ROWS, 2))
    shifted[:, 0] += 5.0  # "f" drifts, by 5 standard deviations
    await log_window(plane, first, 0, shifted[: ROWS // 2])
    second = with_reference(plane, ["f", "g"])
    variant = dpb.Variant(model_name="churn-model", version=second, role=dpb.VARIANT_ROLE_PRIMARY)
    DeploymentManager(plane.server.context.sessions, plane.registry).update(
        dpb.UpdateDeploymentRequest(name="churn", replace_variants=True, variants=[variant]),
        actor="operator",
    )
    await log_window(plane, second, 1000, calm(second, 2))

    async def reported(count: int) -> bool:
        return len(await reports(plane)) == count

    await eventually(lambda: reported(1))
    share = {"deployment": "churn"}

    async def exported() -> bool:  # version 2's report exported (it is stored first)
        return plane.gauges.get_sample_value("aether_drift_detected", share) == 0.0

    await eventually(exported)
    await log_window(plane, first, 2000, shifted[ROWS // 2 :])  # version 1's window fills: reported

    def handled() -> list[str]:  # what the monitor said of version 1's report: once it is exported
        return [r.getMessage() for r in caplog.records if f"churn-model v{first}" in r.getMessage()]

    async def said() -> bool:
        return bool(handled())

    await eventually(said)
    stored = await reports(plane)
    assert [(r.version, r.status) for r in stored] == [  # newest first
        (first, pb.DRIFT_STATUS_DRIFT),  # stored: it is the history of what version 1 served
        (second, pb.DRIFT_STATUS_NO_DRIFT),
    ]
    assert plane.gauges.get_sample_value("aether_drift_detected", share) == 0.0
    assert plane.gauges.get_sample_value("aether_drift_share", share) == stored[1].drifted_share
    assert feature_drifted(plane, "f") == 0.0
    assert any("no longer serves" in message for message in handled()), handled()
    assert webhook.of_kind("data_drift") == []


async def test_a_primary_whose_canary_took_all_the_traffic_no_longer_holds_the_drift_series(
    plane: Plane,
) -> None:
    # The primary drifted; a canary moved to 100 % fixed it. The primary, at 0 %, got no new windows, and
    # its old DRIFT report held aether_drift_detected at 1 and its share for good over the canary's
    # NO_DRIFT reports.
    first = with_reference(plane, ["f", "g"])
    plane.deploy("churn", first)
    await plane.stub.ConfigureMonitor(
        pb.ConfigureMonitorRequest(config=pb.MonitorConfig(deployment="churn", window_rows=ROWS))
    )
    shifted = np.random.default_rng(0).normal(size=(ROWS, 2))
    shifted[:, 0] += 5.0  # "f" drifts, by 5 standard deviations
    await log_window(plane, first, 0, shifted)
    share = {"deployment": "churn"}

    async def detected(value: float) -> bool:  # the report is stored before it is exported
        return plane.gauges.get_sample_value("aether_drift_detected", share) == value

    await eventually(lambda: detected(1.0))
    second = with_reference(plane, ["f", "g"])
    variants = [
        dpb.Variant(name="old", model_name="churn-model", version=first, role=dpb.VARIANT_ROLE_PRIMARY),
        dpb.Variant(
            name="new",
            model_name="churn-model",
            version=second,
            role=dpb.VARIANT_ROLE_CANARY,
            traffic_percent=100.0,
        ),
    ]
    DeploymentManager(plane.server.context.sessions, plane.registry).update(
        dpb.UpdateDeploymentRequest(name="churn", replace_variants=True, variants=variants),
        actor="operator",
    )
    await log_window(plane, second, 1000, calm(second, 2))

    async def reported(count: int) -> bool:
        return len(await reports(plane)) == count

    await eventually(lambda: reported(2))
    await eventually(lambda: detected(0.0))
    assert plane.gauges.get_sample_value("aether_drift_share", share) == 0.0
    assert feature_drifted(plane, "f") == 0.0


async def test_after_a_restart_the_drift_series_count_the_newest_stored_report_of_each_served_version(
    tmp_path: Path, db_url: str, redis_url: str
) -> None:
    # The primary (90 %) drifted, the canary (10 %) did not. After a control-plane restart the newest
    # reports were in memory no more, and the first version to report decided alone: the canary's
    # NO_DRIFT set aether_drift_detected 0 over the primary's stored DRIFT.
    share = {"deployment": "churn"}
    async with open_plane(tmp_path, db_url, redis_url) as plane:
        first = with_reference(plane, ["f", "g"])
        second = with_reference(plane, ["f", "g"])
        variants = [
            dpb.Variant(
                name="main",
                model_name="churn-model",
                version=first,
                role=dpb.VARIANT_ROLE_PRIMARY,
                traffic_percent=90.0,
            ),
            dpb.Variant(
                name="next",
                model_name="churn-model",
                version=second,
                role=dpb.VARIANT_ROLE_CANARY,
                traffic_percent=10.0,
            ),
        ]
        DeploymentManager(plane.server.context.sessions, plane.registry).create(
            dpb.CreateDeploymentRequest(name="churn", variants=variants), actor="operator"
        )
        await plane.stub.ConfigureMonitor(
            pb.ConfigureMonitorRequest(config=pb.MonitorConfig(deployment="churn", window_rows=ROWS))
        )
        shifted = np.random.default_rng(0).normal(size=(ROWS, 2))
        shifted[:, 0] += 5.0  # "f" drifts, by 5 standard deviations
        await log_window(plane, first, 0, shifted)
        await log_window(plane, second, 1000, calm(second, 2))

        async def both_reported() -> bool:
            return len(await reports(plane)) == 2

        await eventually(both_reported)

        async def drifted_before() -> bool:  # the reports are stored before they are exported
            return plane.gauges.get_sample_value("aether_drift_detected", share) == 1.0

        await eventually(drifted_before)

    async with open_plane(tmp_path, db_url, redis_url) as restarted:  # new gauges, same database
        await log_window(restarted, second, 2000, calm(second, 2))  # the canary reports first

        async def exported() -> bool:
            return restarted.gauges.get_sample_value("aether_drift_detected", share) is not None

        await eventually(exported)
        assert len(await reports(restarted)) == 3
        assert restarted.gauges.get_sample_value("aether_drift_detected", share) == 1.0
        stored = next(r for r in await reports(restarted) if r.version == first)
        assert restarted.gauges.get_sample_value("aether_drift_share", share) == stored.drifted_share
        labels = {"deployment": "churn", "feature": "f"}
        assert restarted.gauges.get_sample_value("aether_drift_feature_drifted", labels) == 1.0
