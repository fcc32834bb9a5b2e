"""The drift gauges after real monitor runs (a real control plane and Redis stream, reports scored against
registered reference profiles): a feature's series is gone once no model version the deployment serves
shows it."""

from __future__ import annotations

import numpy as np

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import model_registry_pb2 as mpb
from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.deployments.core import DeploymentManager
from control_plane.monitoring.profiles import register_reference_profile
from tests.integration.monitoring.conftest import Plane, eventually, record

T0 = 1_800_000_000_000_000
ROWS = 40  # a count window: at least 30 finite values per feature are scored
SCORE = np.array([[0.5]], dtype=np.float32)


def feature_drifted(plane: Plane, name: str) -> float | None:
    labels = {"deployment": "churn", "feature": name}
    return plane.gauges.get_sample_value("aether_drift_feature_drifted", labels)


def with_reference(plane: Plane, names: list[str]) -> int:
    """A new approved version of churn-model with a reference profile of ``names``."""
    version = plane.register_version("churn-model")
    plane.registry.review("churn-model", version, mpb.APPROVED, "to serve", actor="reviewer")
    reference = np.random.default_rng(version).normal(size=(500, len(names)))
    sessions = plane.server.context.sessions
    register_reference_profile(
        sessions, plane.registry.artifacts, "churn-model", version, reference, names, actor="trainer"
    )
    return version


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
    assert feature_drifted(plane, "f") is not None and feature_drifted(plane, "g") is not None

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
    scored = plane.gauges.get_sample_value("aether_drift_share", share)
    assert scored is not None and scored >= 0.5  # "f", shifted by 5 standard deviations, drifted

    await log_window(plane, version, 1000, np.full((ROWS, 2), np.nan))
    await eventually(lambda: reported(2))
    newest = (await reports(plane))[0]
    assert newest.status == pb.DRIFT_STATUS_INSUFFICIENT_DATA
    assert all(f.insufficient for f in newest.features)
    assert plane.gauges.get_sample_value("aether_drift_share", share) is None
    assert plane.gauges.get_sample_value("aether_drift_detected", share) == -1.0
