"""The canary controller end to end: a control plane whose loop reads a real Redis prediction-log stream.
A failing canary and a slow canary are rolled back to 0 % automatically with the reason recorded (in the
deployment and the audit log); a healthy one advances through every step and is promoted (blue/green
swap). The stream entries are what the data plane writes for each request."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import redis
from sqlalchemy import select

from clients.aether.v1 import deployments_pb2 as pb
from clients.sdk.deployments import DeploymentsClient, variant
from control_plane.audit.query import AuditFilter, iter_entries
from control_plane.db import create_db_engine, create_session_factory
from control_plane.db.engine import write_session
from control_plane.deployments.tables import DeploymentRow
from tests.integration.deployments.conftest import STREAM, Models, Plane, wait_until

POLICY = pb.CanaryPolicy(
    steps_percent=[10.0, 50.0, 100.0],
    bake_seconds=1,
    max_error_rate=0.05,
    max_p99_latency_ms=100.0,
    max_p99_ratio=3.0,
    min_requests=30,
)

#: (ok, latency_ms) of one request to a variant.
Behaviour = Callable[[random.Random], tuple[bool, float]]


def healthy(rng: random.Random) -> tuple[bool, float]:
    return True, rng.uniform(1.0, 4.0)


def failing(rng: random.Random) -> tuple[bool, float]:
    return rng.random() > 0.3, rng.uniform(1.0, 4.0)  # 30 % errors


def slow(rng: random.Random) -> tuple[bool, float]:
    return True, rng.uniform(150.0, 250.0)


@contextmanager
def traffic(redis_url: str, deployment: str, behaviours: dict[str, Behaviour]) -> Iterator[None]:
    """Appends prediction-log entries for every variant (about 400 requests/s each) until the block ends."""
    stop = threading.Event()

    def write() -> None:
        client = redis.Redis.from_url(redis_url)
        rng = random.Random(7)
        request = 0
        while not stop.is_set():
            pipe = client.pipeline()
            for name, behaviour in behaviours.items():
                ok, latency = behaviour(rng)
                request += 1
                pipe.xadd(
                    STREAM,
                    {
                        "request_id": f"r{request}",
                        "deployment": deployment,
                        "variant": name,
                        "model": "eta",
                        "version": "0",
                        "latency_ms": f"{latency:.3f}",
                        "ok": "1" if ok else "0",
                        "error_code": "" if ok else "INTERNAL",
                    },
                )
            pipe.execute()
            stop.wait(0.0025)
        client.close()

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def audit_actions(plane: Plane) -> list[tuple[str, str]]:
    engine = create_db_engine(plane.db_url)
    try:
        entries = iter_entries(create_session_factory(engine), AuditFilter("deployment", "eta-prod"))
        return [(e.action, e.actor) for e in entries]
    finally:
        engine.dispose()


def start(deployments: DeploymentsClient, models: Models) -> None:
    deployments.create("eta-prod", [variant("eta", models.register("eta"), name="blue")])
    deployments.start_canary("eta-prod", "eta", models.register("eta"), variant_name="green", policy=POLICY)


def finished(deployments: DeploymentsClient) -> Callable[[], bool]:
    return lambda: deployments.get("eta-prod").canary.status != pb.CANARY_STATUS_PROGRESSING


def test_a_failing_canary_is_rolled_back_with_the_reason(
    plane: Plane, deployments: DeploymentsClient, models: Models
) -> None:
    start(deployments, models)
    with traffic(plane.redis_url, "eta-prod", {"blue": healthy, "green": failing}):
        wait_until(finished(deployments))
    deployment = deployments.get("eta-prod")
    assert deployment.canary.status == pb.CANARY_STATUS_ROLLED_BACK
    assert (
        deployment.canary.reason.startswith("error rate ")
        and "above 5.00% at 10%" in deployment.canary.reason
    )
    assert deployment.canary.traffic_percent == 0.0
    assert [(v.name, v.traffic_percent) for v in deployment.variants] == [("blue", 100.0)]
    assert audit_actions(plane)[-1] == ("canary_rollback", "canary-controller")


def test_a_slow_canary_is_rolled_back_with_the_reason(
    plane: Plane, deployments: DeploymentsClient, models: Models
) -> None:
    start(deployments, models)
    with traffic(plane.redis_url, "eta-prod", {"blue": healthy, "green": slow}):
        wait_until(finished(deployments))
    deployment = deployments.get("eta-prod")
    assert deployment.canary.status == pb.CANARY_STATUS_ROLLED_BACK
    assert deployment.canary.reason.startswith("p99 latency ") and "above 100 ms" in deployment.canary.reason
    assert [v.name for v in deployment.variants] == ["blue"]


def test_a_healthy_canary_advances_and_is_promoted(
    plane: Plane, deployments: DeploymentsClient, models: Models
) -> None:
    start(deployments, models)
    with traffic(plane.redis_url, "eta-prod", {"blue": healthy, "green": healthy}):
        wait_until(finished(deployments))
    deployment = deployments.get("eta-prod")
    assert deployment.canary.status == pb.CANARY_STATUS_PROMOTED, deployment.canary.reason
    assert deployment.canary.reason.startswith("healthy at 50%")
    assert [(v.name, v.role, v.traffic_percent) for v in deployment.variants] == [
        ("green", pb.VARIANT_ROLE_PRIMARY, 100.0)
    ]
    assert audit_actions(plane)[-3:] == [
        ("start_canary", "alice"),
        ("canary_advance", "canary-controller"),
        ("canary_promote", "canary-controller"),
    ]


def test_a_canary_that_holds_says_why_without_a_plan_change(
    plane: Plane, deployments: DeploymentsClient, models: Models
) -> None:
    # With no traffic the canary waits for min_requests for ever; its state kept saying "started at 10%",
    # so nothing showed why it did not move on.
    start(deployments, models)
    started = deployments.get("eta-prod")
    wait_until(lambda: deployments.get("eta-prod").canary.reason.startswith("waiting for requests"))
    holding = deployments.get("eta-prod")
    assert holding.canary.reason == "waiting for requests at 10%: 0/30"
    assert holding.canary.status == pb.CANARY_STATUS_PROGRESSING and holding.canary.step_index == 0
    assert holding.plan_revision == started.plan_revision  # data planes have nothing to reload
    assert audit_actions(plane)[-1] == ("start_canary", "alice")  # a hold changes no traffic: not audited


def write_legacy_edit(plane: Plane, name: str) -> None:
    """What UpdateDeployment accepted before it refused policy edits mid-canary: the policy of ``name``
    cut to [10, 100] under a canary at step 2 (rows written then still hold such states)."""
    engine = create_db_engine(plane.db_url)
    try:
        with write_session(create_session_factory(engine)) as session:
            row = session.scalars(select(DeploymentRow).where(DeploymentRow.name == name)).one()
            row.canary_policy = {**row.canary_policy, "steps_percent": [10.0, 100.0]}
            row.canary_state = {**row.canary_state, "step_index": 2}
    finally:
        engine.dispose()


def test_a_canary_that_cannot_be_decided_does_not_stop_the_others(
    plane: Plane, deployments: DeploymentsClient, models: Models, caplog: pytest.LogCaptureFixture
) -> None:
    # "eta-edited" sorts before "eta-prod", so the controller meets the undecidable canary first.
    deployments.create("eta-edited", [variant("eta", models.register("eta"), name="blue")])
    deployments.start_canary("eta-edited", "eta", models.register("eta"), variant_name="green", policy=POLICY)
    write_legacy_edit(plane, "eta-edited")
    start(deployments, models)
    with (
        caplog.at_level(logging.ERROR, logger="aether.control_plane.canary"),
        traffic(plane.redis_url, "eta-prod", {"blue": healthy, "green": failing}),
    ):
        wait_until(finished(deployments))
    deployment = deployments.get("eta-prod")
    assert deployment.canary.status == pb.CANARY_STATUS_ROLLED_BACK, deployment.canary.reason
    assert [v.name for v in deployment.variants] == ["blue"]
    assert deployments.get("eta-edited").canary.status == pb.CANARY_STATUS_PROGRESSING  # left for a person
    assert "canary green of eta-edited could not be evaluated" in caplog.text
