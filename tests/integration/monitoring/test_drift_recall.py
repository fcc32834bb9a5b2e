"""The stored reports the drift gauges count after a start (``recall.py``), after real monitor runs: a
real control plane, Redis stream and database."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy.exc
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.deployments.core import DeploymentManager
from control_plane.monitoring import recall
from control_plane.monitoring.reports import newest_of_versions
from control_plane.monitoring.served import Version
from tests.integration.monitoring.conftest import Plane, Webhook, eventually, open_plane
from tests.integration.monitoring.test_drift_gauges import ROWS, calm, log_window, reports, with_reference

SHARE = {"deployment": "churn"}


def plan(first: int, second: int, canary_percent: float) -> list[dpb.Variant]:
    """Version ``first`` primary, ``second`` canary at ``canary_percent``."""
    return [
        dpb.Variant(
            name="main",
            model_name="churn-model",
            version=first,
            role=dpb.VARIANT_ROLE_PRIMARY,
            traffic_percent=100.0 - canary_percent,
        ),
        dpb.Variant(
            name="next",
            model_name="churn-model",
            version=second,
            role=dpb.VARIANT_ROLE_CANARY,
            traffic_percent=canary_percent,
        ),
    ]


def drifted(seed: int) -> np.ndarray:
    shifted = np.random.default_rng(seed).normal(size=(ROWS, 2))
    shifted[:, 0] += 5.0  # "f" drifts, by 5 standard deviations
    return shifted


async def test_a_database_failure_reading_back_the_stored_reports_loses_neither_gauges_nor_alert(
    plane: Plane, webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The read back runs after the report is stored and its window taken off the queue: a database
    # failure there failed the tick past the point of retry, and the DRIFT report set no gauge and sent
    # no alert, ever. SQLite cannot be made to fail that one read alone, so the failure is INJECTED, at
    # the read recall.py calls (its module's newest_of_versions), once.
    reads: list[set[Version]] = []

    def locked_once(
        sessions: sessionmaker[Session], deployment: str, versions: Iterable[Version], *since: int
    ) -> list[pb.DriftReport]:
        reads.append(set(versions))
        if len(reads) == 1:
            raise sqlalchemy.exc.OperationalError("SELECT", {}, Exception("database is locked"))
        return newest_of_versions(sessions, deployment, versions, *since)

    monkeypatch.setattr(recall, "newest_of_versions", locked_once)
    first = with_reference(plane, ["f", "g"])
    second = with_reference(plane, ["f", "g"])
    DeploymentManager(plane.server.context.sessions, plane.registry).create(
        dpb.CreateDeploymentRequest(name="churn", variants=plan(first, second, 10.0)), actor="operator"
    )
    config = pb.MonitorConfig(deployment="churn", window_rows=ROWS, webhook_url=webhook.url)
    await plane.stub.ConfigureMonitor(pb.ConfigureMonitorRequest(config=config))
    await log_window(plane, first, 0, drifted(0))

    async def alerted() -> bool:
        return len(webhook.of_kind("data_drift")) == 1

    await eventually(alerted)
    assert plane.gauges.get_sample_value("aether_drift_detected", SHARE) == 1.0
    assert len(reads) == 1
    # The deployment is read back again at its next report, which the read no longer fails.
    await log_window(plane, first, 1000, calm(first, 2))

    async def read_again() -> bool:
        return len(reads) == 2 and plane.gauges.get_sample_value("aether_drift_detected", SHARE) == 0.0

    await eventually(read_again)
    assert reads == [{("churn-model", second)}] * 2
    assert len(await reports(plane)) == 2
    assert len(webhook.of_kind("data_drift")) == 1


async def test_after_a_restart_a_report_from_before_the_plan_took_its_traffic_is_not_read_back(
    tmp_path: Path, db_url: str, redis_url: str
) -> None:
    # The canary drifted, was parked at 0 % (the primary's calm report then forgot it, in memory) and
    # holds traffic again, with no window since. Without a restart the primary's next calm report shows
    # no drift; after one, the canary's stored DRIFT from before it was parked was read back and set
    # aether_drift_detected 1: the gauges depended on whether the process restarted.
    async with open_plane(tmp_path, db_url, redis_url) as plane:
        first = with_reference(plane, ["f", "g"])
        second = with_reference(plane, ["f", "g"])
        deployments = DeploymentManager(plane.server.context.sessions, plane.registry)
        deployments.create(
            dpb.CreateDeploymentRequest(name="churn", variants=plan(first, second, 10.0)), actor="operator"
        )
        await plane.stub.ConfigureMonitor(
            pb.ConfigureMonitorRequest(config=pb.MonitorConfig(deployment="churn", window_rows=ROWS))
        )
        await log_window(plane, second, 0, drifted(0))

        async def reported(count: int) -> bool:
            return len(await reports(plane)) == count

        await eventually(lambda: reported(1))
        for canary_percent in (0.0, 10.0):
            deployments.update(
                dpb.UpdateDeploymentRequest(
                    name="churn", replace_variants=True, variants=plan(first, second, canary_percent)
                ),
                actor="operator",
            )
            if canary_percent == 0.0:  # the primary reports while the canary is parked
                await log_window(plane, first, 1000, calm(first, 2))
                await eventually(lambda: reported(2))

    async with open_plane(tmp_path, db_url, redis_url) as restarted:  # new gauges, same database
        await log_window(restarted, first, 2000, calm(first, 2))

        async def exported() -> bool:
            return restarted.gauges.get_sample_value("aether_drift_detected", SHARE) is not None

        await eventually(exported)
        assert len(await reports(restarted)) == 3
        assert restarted.gauges.get_sample_value("aether_drift_detected", SHARE) == 0.0
        labels = {"deployment": "churn", "feature": "f"}
        assert restarted.gauges.get_sample_value("aether_drift_feature_drifted", labels) == 0.0
