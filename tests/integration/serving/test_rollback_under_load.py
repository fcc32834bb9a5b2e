"""A rollback under load fails no request: a slow canary (one row at a time, so a queue builds behind it)
takes half the traffic of a deployment on the real control plane, and is rolled back while requests wait
for it. The data plane swaps the plan and unloads the canary's version, which finishes the requests it
holds before its session is released; every caller gets an answer."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from clients.aether.v1 import deployments_pb2 as pb
from clients.sdk.deployments import variant
from data_plane.models.version import ModelState
from tests.integration.closed_loop import conftest as closed_loop
from tests.integration.closed_loop.conftest import Stack, call
from tests.integration.closed_loop.load import closed_loop as load_loop
from tests.integration.closed_loop.models import slow_on_features
from tests.support import onnx_models

pytestmark = pytest.mark.integration

stack = closed_loop.stack  # the whole serving stack (control plane, data plane, Redis), for real


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """The control plane's database does not matter here: SQLite only."""
    return f"sqlite:///{tmp_path / 'control_plane.db'}"


DEPLOYMENT = "eta-rollback"
SERVING = pb.ServingConfig(warmup_requests=2, max_batch_size=1, max_queue_delay_us=1000)
#: A canary the controller leaves alone (it would need far more requests to judge): only the test acts.
HANDS_OFF = pb.CanaryPolicy(
    steps_percent=[50.0, 100.0],
    bake_seconds=600,
    max_error_rate=0.5,
    max_p99_latency_ms=60_000.0,
    max_p99_ratio=1000.0,
    min_requests=1_000_000,
)


async def test_rolling_back_a_canary_under_load_fails_no_request(stack: Stack) -> None:
    blue = await stack.register("eta", onnx_models.affine(), "blue.onnx")
    slow = await stack.register("eta", slow_on_features(), "slow.onnx")
    created = await call(
        stack.deployments.create, DEPLOYMENT, [variant("eta", blue, name="blue")], serving=SERVING
    )
    await stack.plans_at(created.plan_revision)
    started = await call(
        stack.deployments.start_canary, DEPLOYMENT, "eta", slow, variant_name="slow", policy=HANDS_OFF
    )
    await stack.plans_at(started.plan_revision)
    manager = stack.data_plane.manager

    stop = asyncio.Event()

    async def stopped() -> bool:
        return stop.is_set()

    load = asyncio.create_task(
        load_loop(stack.data_plane_address, DEPLOYMENT, clients=8, max_seconds=30, stop=stopped, tag="rb")
    )
    # Wait until requests queue behind the slow canary, then roll it back.
    deadline = time.monotonic() + 15
    while manager.queue_depth("eta", slow) < 2:
        assert time.monotonic() < deadline, "no queue built up behind the slow canary"
        await asyncio.sleep(0.005)
    rolled_back = await call(stack.deployments.rollback, DEPLOYMENT, "slow", "test rollback")
    await stack.plans_at(rolled_back.plan_revision)
    installed_at = time.monotonic()
    await asyncio.sleep(0.5)  # traffic under the new plan
    stop.set()
    result = await load

    assert result.codes() == {grpc.StatusCode.OK}, result.failures()
    served_by_slow = [o for o in result.outcomes if o.variant == "slow"]
    assert served_by_slow, "the canary served nothing before its rollback"
    # Once the new plan was in, only blue took new requests.
    assert all(o.variant == "blue" for o in result.outcomes if o.sent_at > installed_at)
    # The canary's version is gone, its session released once its requests were answered.
    await asyncio.wait_for(manager.released(), 10)
    assert manager.state("eta", slow) is ModelState.UNLOADED
