"""The canary controller on requests refused as the caller's mistake (INVALID_ARGUMENT, NOT_FOUND, ...).

A new version can refuse with those codes what its primary answers: it reads a request-time feature the
callers do not send yet (INVALID_ARGUMENT "row 0 has no request-time feature 'hour'"), or a feature view
version registered but not yet filled (NOT_FOUND). Such a canary used to show 0 % errors and be promoted,
and then every request failed. It is rolled back now, with a reason that says so; while refusals that
reach both variants alike (the callers' real mistakes) still let a healthy canary be promoted."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import redis

from clients.aether.v1 import deployments_pb2 as pb
from clients.sdk.deployments import DeploymentsClient
from tests.integration.deployments.conftest import STREAM, Models, Plane, wait_until
from tests.integration.deployments.test_canary_loop import finished, start

#: The error code one request to a variant is answered with ("": answered).
Behaviour = Callable[[random.Random], str]


@contextmanager
def traffic(redis_url: str, deployment: str, behaviours: dict[str, Behaviour]) -> Iterator[None]:
    """Appends what the data plane logs for every variant (about 400 requests/s each) until the block ends."""
    stop = threading.Event()

    def write() -> None:
        client = redis.Redis.from_url(redis_url)
        rng = random.Random(7)
        n = 0
        while not stop.is_set():
            pipe = client.pipeline()
            for name, behaviour in behaviours.items():
                code = behaviour(rng)
                n += 1
                pipe.xadd(
                    STREAM,
                    {
                        "request_id": f"r{n}",
                        "deployment": deployment,
                        "variant": name,
                        "model": "eta",
                        "version": "0",
                        "latency_ms": f"{rng.uniform(1, 4):.3f}",
                        "ok": "0" if code else "1",
                        "error_code": code or "OK",
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


def answers(rng: random.Random) -> str:
    return ""


def callers_mistakes(rng: random.Random) -> str:
    """A fifth of the callers' requests name an entity with no stored features: every variant refuses
    them alike."""
    return "NOT_FOUND" if rng.random() < 0.2 else ""


@pytest.mark.parametrize("code", ["INVALID_ARGUMENT", "NOT_FOUND"])
def test_a_canary_refusing_every_request_its_primary_answers_is_rolled_back(
    plane: Plane, deployments: DeploymentsClient, models: Models, code: str
) -> None:
    start(deployments, models)
    with traffic(plane.redis_url, "eta-prod", {"blue": answers, "green": lambda rng: code}):
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
    start(deployments, models)
    with traffic(plane.redis_url, "eta-prod", {"blue": callers_mistakes, "green": callers_mistakes}):
        wait_until(finished(deployments))
    state = deployments.get("eta-prod").canary
    assert state.status == pb.CANARY_STATUS_PROMOTED, (pb.CanaryStatus.Name(state.status), state.reason)
    assert "as the caller's mistake (primary " in state.reason
