"""The stored reports the drift gauges count after a start (``recall.py``), after real monitor runs: a
real control plane, Redis stream and database."""

from __future__ import annotations

from collections.abc import Iterable

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
from tests.integration.monitoring.conftest import Plane, Webhook, eventually
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
        sessions: sessionmaker[Session], deployment: str, versions: Iterable[Version]
    ) -> list[pb.DriftReport]:
        reads.append(set(versions))
        if len(reads) == 1:
            raise sqlalchemy.exc.OperationalError("SELECT", {}, Exception("database is locked"))
        return newest_of_versions(sessions, deployment, versions)

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
