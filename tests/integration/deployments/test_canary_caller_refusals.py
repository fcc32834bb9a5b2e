"""The canary controller on requests refused as the caller's mistake (INVALID_ARGUMENT, NOT_FOUND, ...).

A new version can refuse with those codes what its primary answers: it reads a request-time feature the
callers do not send yet (INVALID_ARGUMENT "row 0 has no request-time feature 'hour'"), or a feature view
version registered but not yet filled (NOT_FOUND). Such a canary used to show 0 % errors and be promoted,
and then every request failed. It is rolled back now, with a reason that says so; while refusals that
reach both variants alike (the callers' real mistakes) still let a healthy canary be promoted."""

from __future__ import annotations

import random

import pytest

from clients.aether.v1 import deployments_pb2 as pb
from clients.sdk.deployments import DeploymentsClient
from tests.integration.deployments.conftest import Models, Plane, wait_until
from tests.integration.deployments.test_canary_loop import finished, healthy, start, traffic


def callers_mistakes(rng: random.Random) -> tuple[float, str]:
    """A fifth of the callers' requests name an entity with no stored features: every variant refuses
    them alike."""
    return rng.uniform(1.0, 4.0), "NOT_FOUND" if rng.random() < 0.2 else ""


@pytest.mark.parametrize("code", ["INVALID_ARGUMENT", "NOT_FOUND"])
def test_a_canary_refusing_every_request_its_primary_answers_is_rolled_back(
    plane: Plane, deployments: DeploymentsClient, models: Models, code: str
) -> None:
    versions = start(deployments, models)
    with traffic(
        plane.redis_url,
        "eta-prod",
        {"blue": healthy, "green": lambda rng: (rng.uniform(1.0, 4.0), code)},
        versions,
    ):
        wait_until(finished(deployments))
    deployment = deployments.get("eta-prod")
    state = deployment.canary
    # It used to be promoted here: the refusals counted as no error of the canary's.
    assert state.status == pb.CANARY_STATUS_ROLLED_BACK, (pb.CanaryStatus.Name(state.status), state.reason)
    assert state.reason.startswith(
        f"canary refused 100.0% of requests as the caller's mistake ({code}) against 0.0% for the primary"
    ), state.reason
    assert "at 10%" in state.reason
    assert [(v.name, v.traffic_percent) for v in deployment.variants] == [("blue", 100.0)]


def test_refusals_both_variants_make_alike_do_not_stop_a_healthy_canary(
    plane: Plane, deployments: DeploymentsClient, models: Models
) -> None:
    versions = start(deployments, models)
    with traffic(
        plane.redis_url, "eta-prod", {"blue": callers_mistakes, "green": callers_mistakes}, versions
    ):
        wait_until(finished(deployments))
    state = deployments.get("eta-prod").canary
    assert state.status == pb.CANARY_STATUS_PROMOTED, (pb.CanaryStatus.Name(state.status), state.reason)
    assert "as the caller's mistake (primary " in state.reason
