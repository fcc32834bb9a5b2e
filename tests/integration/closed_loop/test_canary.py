"""The canary loop closed, end to end and for real: Predict traffic from a closed-loop load generator goes to
a data plane that follows the control plane's deployment plans; the data plane logs every request to the
Redis prediction log; the control plane's canary controller reads that log and moves the canary, which
the data plane follows. On one deployment, one after the other:

(a) a canary whose model fails on real traffic is rolled back to 0 % automatically, the reason in the
    deployment's status and in the audit log;
(b) a canary that answers correctly but slowly is rolled back on its p99 latency;
(c) a healthy canary advances through every step and is promoted (blue/green swap), after which the data
    plane serves it alone.
"""

from __future__ import annotations

import grpc
import pytest

from clients.aether.v1 import deployments_pb2 as pb
from clients.sdk.audit import AuditClient, audit_filter, entry_json
from clients.sdk.deployments import variant
from tests.integration.closed_loop.conftest import Stack, call
from tests.integration.closed_loop.load import LoadResult, closed_loop
from tests.integration.closed_loop.models import slow_on_features
from tests.support import onnx_models

pytestmark = pytest.mark.integration

DEPLOYMENT = "eta-prod"
SERVING = pb.ServingConfig(warmup_requests=2, max_queue_delay_us=1000)
#: Breaches roll back at the first step; the slow model's rows take ~10 ms, far above the 5 ms ceiling.
STRICT = pb.CanaryPolicy(
    steps_percent=[30.0, 60.0, 100.0],
    bake_seconds=1,
    max_error_rate=0.05,
    max_p99_latency_ms=5.0,
    max_p99_ratio=50.0,
    min_requests=20,
)
#: The healthy canary is judged on errors only with a generous ceiling: this machine is shared, and the
#: test must not fail on a busy neighbour's latency.
LENIENT = pb.CanaryPolicy(
    steps_percent=[30.0, 60.0, 100.0],
    bake_seconds=1,
    max_error_rate=0.05,
    max_p99_latency_ms=2000.0,
    max_p99_ratio=1000.0,
    min_requests=20,
)


async def _canary_finished(stack: Stack) -> bool:
    deployment = await call(stack.deployments.get, DEPLOYMENT)
    return bool(deployment.canary.status != pb.CANARY_STATUS_PROGRESSING)


async def _run_canary(
    stack: Stack, version: int, name: str, policy: pb.CanaryPolicy
) -> tuple[pb.Deployment, LoadResult]:
    """Starts the canary, drives traffic until the controller finished it, and returns the deployment once
    the data plane serves its final plan."""
    started = await call(
        stack.deployments.start_canary, DEPLOYMENT, "eta", version, variant_name=name, policy=policy
    )
    await stack.plans_at(started.plan_revision)  # the canary's model is loaded and routed to
    load = await closed_loop(
        stack.data_plane_address,
        DEPLOYMENT,
        clients=4,
        max_seconds=30,
        stop=lambda: _canary_finished(stack),
        tag=name,
    )
    finished = await call(stack.deployments.get, DEPLOYMENT)
    await stack.plans_at(finished.plan_revision)
    return finished, load


async def _served_after(stack: Stack, tag: str) -> LoadResult:
    """A short burst of traffic once the final plan is in place."""
    return await closed_loop(stack.data_plane_address, DEPLOYMENT, clients=2, max_requests=60, tag=tag)


def _controller_entries(stack: Stack) -> list[dict[str, object]]:
    with AuditClient(stack.control_plane.address) as audit:
        entries = [entry_json(e) for e in audit.entries(audit_filter("deployment", DEPLOYMENT))]
    return [e for e in entries if e["actor"] == "canary-controller"]


async def test_the_canary_controller_acts_on_real_traffic(stack: Stack) -> None:
    blue = await stack.register("eta", onnx_models.affine(), "blue.onnx")
    failing = await stack.register("eta", onnx_models.failing(), "failing.onnx")
    slow = await stack.register("eta", slow_on_features(), "slow.onnx")
    healthy = await stack.register("eta", onnx_models.mlp(input_size=4, hidden=(8,)), "healthy.onnx")
    created = await call(
        stack.deployments.create, DEPLOYMENT, [variant("eta", blue, name="blue")], serving=SERVING
    )
    await stack.plans_at(created.plan_revision)

    # (a) The failing canary: its requests fail, and it is rolled back at its first step.
    deployment, load = await _run_canary(stack, failing, "failing", STRICT)
    assert deployment.canary.status == pb.CANARY_STATUS_ROLLED_BACK, deployment.canary.reason
    assert (
        deployment.canary.reason.startswith("error rate ")
        and "above 5.00% at 30%" in deployment.canary.reason
    )
    assert deployment.canary.traffic_percent == 0.0
    assert [(v.name, v.traffic_percent) for v in deployment.variants] == [("blue", 100.0)]
    assert grpc.StatusCode.INTERNAL in load.codes() or grpc.StatusCode.INVALID_ARGUMENT in load.codes()
    assert set(load.served_by()) == {"blue"}  # every answer came from blue: the canary's all failed
    after = await _served_after(stack, "after-a")
    assert after.codes() == {grpc.StatusCode.OK} and set(after.served_by()) == {"blue"}

    # (b) The slow canary: correct answers, rolled back on its p99.
    deployment, load = await _run_canary(stack, slow, "slow", STRICT)
    assert deployment.canary.status == pb.CANARY_STATUS_ROLLED_BACK, deployment.canary.reason
    assert (
        deployment.canary.reason.startswith("p99 latency ")
        and "above 5 ms at 30%" in deployment.canary.reason
    )
    assert [v.name for v in deployment.variants] == ["blue"]
    assert load.codes() == {grpc.StatusCode.OK} and load.served_by().get("slow", 0) >= STRICT.min_requests
    after = await _served_after(stack, "after-b")
    assert set(after.served_by()) == {"blue"}

    # (c) The healthy canary: 30 % → 60 % → promoted, and then it serves everything.
    deployment, load = await _run_canary(stack, healthy, "green", LENIENT)
    assert deployment.canary.status == pb.CANARY_STATUS_PROMOTED, deployment.canary.reason
    assert deployment.canary.reason.startswith("healthy at 60%")
    assert [(v.name, v.role, v.traffic_percent) for v in deployment.variants] == [
        ("green", pb.VARIANT_ROLE_PRIMARY, 100.0)
    ]
    assert load.codes() == {grpc.StatusCode.OK} and set(load.served_by()) == {"blue", "green"}
    after = await _served_after(stack, "after-c")
    assert after.codes() == {grpc.StatusCode.OK} and set(after.served_by()) == {"green"}
    assert {o.version for o in after.outcomes} == {healthy}

    # Every automatic move is in the audit log, as the controller's, with the reason it acted on.
    entries = await call(_controller_entries, stack)
    assert [e["action"] for e in entries] == [
        "canary_rollback",
        "canary_rollback",
        "canary_advance",
        "canary_promote",
    ]
    reasons = [e["after"]["canary"]["reason"] for e in entries]  # type: ignore[index]
    assert reasons[0].startswith("error rate ") and reasons[1].startswith("p99 latency ")
    assert reasons[3] == deployment.canary.reason
