"""The canary controller end to end: a control plane whose loop reads a real Redis prediction-log stream.
A failing canary and a slow canary are rolled back to 0 % automatically with the reason recorded (in the
deployment and the audit log); a healthy one advances through every step and is promoted (blue/green
swap). The stream entries are what the data plane writes for each request. A canary that fails while the
data plane cannot write the log (Redis out of memory) is not promoted on the entries from before, and
once writes resume the gap they leave restarts the step's bake."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from sqlalchemy import select

from clients.aether.v1 import deployments_pb2 as pb
from clients.sdk.deployments import DeploymentsClient, variant
from control_plane.audit.query import AuditFilter, iter_entries
from control_plane.db import create_db_engine, create_session_factory
from control_plane.db.engine import write_session
from control_plane.deployments.tables import DeploymentRow
from data_plane.prediction_log import PredictionLog, PredictionRecord
from data_plane.redis_client import RedisClient
from tests.integration.deployments.conftest import STREAM, Models, Plane, wait_until
from tests.support.prediction_log import writes_refused

POLICY = pb.CanaryPolicy(
    steps_percent=[10.0, 50.0, 100.0],
    bake_seconds=1,
    max_error_rate=0.05,
    max_p99_latency_ms=100.0,
    max_p99_ratio=3.0,
    min_requests=30,
)

#: (latency_ms, the gRPC status name it was answered with: "" when answered) of one request to a variant.
Behaviour = Callable[[random.Random], tuple[float, str]]


def healthy(rng: random.Random) -> tuple[float, str]:
    return rng.uniform(1.0, 4.0), ""


def failing(rng: random.Random) -> tuple[float, str]:
    return rng.uniform(1.0, 4.0), "INTERNAL" if rng.random() <= 0.3 else ""  # 30 % errors


def slow(rng: random.Random) -> tuple[float, str]:
    return rng.uniform(150.0, 250.0), ""


@contextmanager
def traffic(
    redis_url: str, deployment: str, behaviours: dict[str, Behaviour], versions: Mapping[str, int]
) -> Iterator[None]:
    """Appends prediction-log entries for every variant (about 400 requests/s each) until the block ends,
    each naming the version of model ``eta`` that ``versions`` has for its variant when it is written (as
    the data plane logs the version it served)."""
    stop = threading.Event()

    def write() -> None:
        client = redis.Redis.from_url(redis_url)
        rng = random.Random(7)
        request = 0
        while not stop.is_set():
            pipe = client.pipeline()
            for name, behaviour in behaviours.items():
                latency, code = behaviour(rng)
                request += 1
                pipe.xadd(
                    STREAM,
                    {
                        "request_id": f"r{request}",
                        "deployment": deployment,
                        "variant": name,
                        "model": "eta",
                        "version": str(versions[name]),
                        "latency_ms": f"{latency:.3f}",
                        "ok": "0" if code else "1",
                        "error_code": code,
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


def start(deployments: DeploymentsClient, models: Models) -> dict[str, int]:
    """Primary ``blue`` and canary ``green``, each a new version of ``eta``; their versions by variant."""
    versions = {"blue": models.register("eta"), "green": models.register("eta")}
    deployments.create("eta-prod", [variant("eta", versions["blue"], name="blue")])
    deployments.start_canary("eta-prod", "eta", versions["green"], variant_name="green", policy=POLICY)
    return versions


def finished(deployments: DeploymentsClient) -> Callable[[], bool]:
    return lambda: deployments.get("eta-prod").canary.status != pb.CANARY_STATUS_PROGRESSING


def test_a_failing_canary_is_rolled_back_with_the_reason(
    plane: Plane, deployments: DeploymentsClient, models: Models
) -> None:
    versions = start(deployments, models)
    with traffic(plane.redis_url, "eta-prod", {"blue": healthy, "green": failing}, versions):
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
    versions = start(deployments, models)
    with traffic(plane.redis_url, "eta-prod", {"blue": healthy, "green": slow}, versions):
        wait_until(finished(deployments))
    deployment = deployments.get("eta-prod")
    assert deployment.canary.status == pb.CANARY_STATUS_ROLLED_BACK
    assert deployment.canary.reason.startswith("p99 latency ") and "above 100 ms" in deployment.canary.reason
    assert [v.name for v in deployment.variants] == ["blue"]


def test_a_healthy_canary_advances_and_is_promoted(
    plane: Plane, deployments: DeploymentsClient, models: Models
) -> None:
    versions = start(deployments, models)
    with traffic(plane.redis_url, "eta-prod", {"blue": healthy, "green": healthy}, versions):
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


def test_requests_another_version_served_under_the_canarys_name_are_not_its_evidence(
    plane: Plane, deployments: DeploymentsClient, models: Models
) -> None:
    # Blue/green alternation: "green" (v2) was promoted over "blue" (v1), and the next canary is "blue"
    # again, now v3. A data plane still serving the plan from before the promotion (its watch lags, or it
    # loads v3 before it swaps the new plan in) goes on logging requests of "blue" served by v1: they
    # counted as the new canary's, which was advanced and promoted on v1's health with no request served
    # by v3.
    old_blue, green, new_blue = (models.register("eta") for _ in range(3))
    deployments.create("eta-prod", [variant("eta", green, name="green")])
    deployments.start_canary("eta-prod", "eta", new_blue, variant_name="blue", policy=POLICY)
    served = {"green": green, "blue": old_blue}
    with traffic(plane.redis_url, "eta-prod", {"green": healthy, "blue": healthy}, served):
        wait_until(lambda: reason(deployments).startswith("waiting for requests") or finished(deployments)())
        held = deployments.get("eta-prod")
        assert held.canary.status == pb.CANARY_STATUS_PROGRESSING, held.canary.reason
        assert held.canary.reason == "waiting for requests at 10%: 0/30"
        served["blue"] = new_blue  # the data plane swapped the new plan in: v3 serves "blue"
        wait_until(finished(deployments))
    deployment = deployments.get("eta-prod")
    assert deployment.canary.status == pb.CANARY_STATUS_PROMOTED, deployment.canary.reason
    assert [(v.name, v.version) for v in deployment.variants] == [("blue", new_blue)]


def test_the_first_step_bakes_from_the_canarys_first_request(
    plane: Plane, deployments: DeploymentsClient, models: Models
) -> None:
    # A data plane loads the canary's version before it routes to it (a large model, or a data plane
    # reconnecting to a restarted control plane, takes a while): the bake counted from the start, so a
    # canary that got its first request after the bake was over advanced as soon as min_requests arrived,
    # judged on a fraction of a second of traffic.
    versions = start(deployments, models)
    wait_until(lambda: reason(deployments) == "waiting for requests at 10%: 0/30")
    serving_from = time.time()
    with traffic(plane.redis_url, "eta-prod", {"blue": healthy, "green": healthy}, versions):
        wait_until(finished(deployments))
    deployment = deployments.get("eta-prod")
    assert deployment.canary.status == pb.CANARY_STATUS_PROMOTED, deployment.canary.reason
    advanced_at = deployment.canary.step_started_at_us / 1e6  # the step the canary was promoted from
    assert advanced_at - serving_from >= POLICY.bake_seconds


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
    versions = start(deployments, models)
    with (
        caplog.at_level(logging.ERROR, logger="aether.control_plane.canary"),
        traffic(plane.redis_url, "eta-prod", {"blue": healthy, "green": failing}, versions),
    ):
        wait_until(finished(deployments))
    deployment = deployments.get("eta-prod")
    assert deployment.canary.status == pb.CANARY_STATUS_ROLLED_BACK, deployment.canary.reason
    assert [v.name for v in deployment.variants] == ["blue"]
    assert deployments.get("eta-edited").canary.status == pb.CANARY_STATUS_PROGRESSING  # left for a person
    assert "canary green of eta-edited could not be evaluated" in caplog.text


class LoggedTraffic:
    """Requests to both variants logged through the data plane's own prediction-log writer (its batching,
    its drops and its gap markers), about 200 a second each, from a thread with its own event loop, until
    :meth:`stop`. :meth:`canary_fails`: the canary's requests fail (INTERNAL), or no longer do."""

    def __init__(self, redis_url: str, versions: Mapping[str, int]) -> None:
        self._versions = versions  # of model eta, by variant
        self._failing = False
        self._lock = threading.Lock()  # a request's outcome and its recording go together
        self.recorded = 0
        self.log: PredictionLog | None = None
        self._redis_url = redis_url
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    async def _run(self) -> None:
        client = RedisClient(self._redis_url, pool_size=1)
        self.log = log = PredictionLog(client, STREAM, sample_rate=0.0, maxlen=100_000)
        log.start()
        self._ready.set()
        while not self._stop.is_set():
            with self._lock:
                for name in ("blue", "green"):
                    failed = name == "green" and self._failing
                    self.recorded += 1
                    log.record(
                        PredictionRecord(
                            request_id=f"r{self.recorded}", deployment="eta-prod", model="eta",
                            version=self._versions[name], variant=name, role="served", routing_key="",
                            ts_us=time.time_ns() // 1000, latency_ms=2.0, ok=not failed,
                            error_code="INTERNAL" if failed else "OK",
                        )
                    )  # fmt: skip
            await asyncio.sleep(0.005)
        await log.stop()
        await client.close()

    def canary_fails(self, failing: bool) -> int:
        """Switches the canary's outcome; returns how many requests were recorded before the switch."""
        with self._lock:
            self._failing = failing
            return self.recorded

    def settled(self, recorded: int) -> bool:
        """Whether the first ``recorded`` requests are each written or dropped (none still buffered)."""
        return self.log is not None and self.log.written + self.log.dropped >= recorded

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def canary_entries(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        entries: Any = client.xrange(STREAM)
        return sum(1 for _, fields in entries if fields.get(b"variant") == b"green")
    finally:
        client.close()


BLIND_POLICY = pb.CanaryPolicy(
    steps_percent=[50.0, 100.0], bake_seconds=3, max_error_rate=0.05, max_p99_ratio=1000.0, min_requests=20
)


def start_blind(deployments: DeploymentsClient, models: Models) -> dict[str, int]:
    versions = {"blue": models.register("eta"), "green": models.register("eta")}
    deployments.create("eta-prod", [variant("eta", versions["blue"], name="blue")])
    deployments.start_canary("eta-prod", "eta", versions["green"], variant_name="green", policy=BLIND_POLICY)
    return versions


def reason(deployments: DeploymentsClient) -> str:
    return deployments.get("eta-prod").canary.reason


@contextmanager
def canary_failing_while_the_log_is_refused(
    plane: Plane, deployments: DeploymentsClient, traffic: LoggedTraffic
) -> Iterator[None]:
    """The reviewer's scenario: 25 healthy canary requests are logged, then the canary fails every
    request while Redis answers the data plane's writes with OOM. The block's body runs once the step's
    bake is over, with the log still refused; on leaving, Redis takes writes again."""
    wait_until(lambda: canary_entries(plane.redis_url) >= 25)
    with writes_refused(plane.redis_url):
        traffic.canary_fails(True)
        wait_until(lambda: traffic.log is not None and traffic.log.dropped > 50)
        # Held past its bake on the entries from before the refusal: it used to be promoted here as
        # "healthy at 50% ... error rate 0.00% over 25 requests", and then fail every request.
        wait_until(lambda: reason(deployments).startswith("waiting for recent canary traffic at 50%"))
        yield
        held = deployments.get("eta-prod")
        assert held.canary.status == pb.CANARY_STATUS_PROGRESSING, held.canary.reason
        assert [(v.name, v.traffic_percent) for v in held.variants] == [("blue", 50.0), ("green", 50.0)]


def test_a_canary_failing_while_its_entries_are_dropped_is_not_promoted_and_is_rolled_back_after(
    plane: Plane, deployments: DeploymentsClient, models: Models
) -> None:
    versions = start_blind(deployments, models)
    traffic = LoggedTraffic(plane.redis_url, versions)
    try:
        with canary_failing_while_the_log_is_refused(plane, deployments, traffic):
            pass
        # Writes resume: the gap marker restarts the window, and the failures logged after it roll back.
        wait_until(finished(deployments))
    finally:
        traffic.stop()
    deployment = deployments.get("eta-prod")
    assert deployment.canary.status == pb.CANARY_STATUS_ROLLED_BACK, deployment.canary.reason
    assert deployment.canary.reason.startswith("error rate ")
    assert [v.name for v in deployment.variants] == ["blue"]
    assert ("canary_promote", "canary-controller") not in audit_actions(plane)


def test_after_entries_were_dropped_the_canary_bakes_again_before_it_is_promoted(
    plane: Plane, deployments: DeploymentsClient, models: Models
) -> None:
    versions = start_blind(deployments, models)
    traffic = LoggedTraffic(plane.redis_url, versions)
    try:
        with canary_failing_while_the_log_is_refused(plane, deployments, traffic):
            # Recovered before the log did: once every failing request was dropped (none left in the
            # writer's buffer to be written after), nothing logged shows the failures.
            failing_up_to = traffic.canary_fails(False)
            wait_until(lambda: traffic.settled(failing_up_to))
        resumed = time.time()
        # The hold says what was lost and bakes the step again from the gap marker.
        wait_until(lambda: "the data plane could not log" in reason(deployments))
        held = reason(deployments)
        assert held.startswith("baking at 50%") and "requests of the deployment between" in held, held
        wait_until(finished(deployments))
    finally:
        traffic.stop()
    deployment = deployments.get("eta-prod")
    assert deployment.canary.status == pb.CANARY_STATUS_PROMOTED, deployment.canary.reason
    # Promoted only on a whole bake after the marker (the marker comes after writes resumed).
    assert time.time() - resumed >= BLIND_POLICY.bake_seconds
    assert audit_actions(plane)[-2:] == [("start_canary", "alice"), ("canary_promote", "canary-controller")]
