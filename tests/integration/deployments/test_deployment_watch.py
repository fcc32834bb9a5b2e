"""The data plane's deployment watch against a real control plane: plans arrive and are routed from, a
new variant's model is loaded before the plan that routes to it is installed, versions no plan uses are
unloaded, and a restart during a control-plane outage serves the persisted plans."""

from __future__ import annotations

import asyncio
from pathlib import Path

from clients.sdk.deployments import DeploymentsClient, variant
from data_plane.deployment_watch import DeploymentWatch
from data_plane.models.manager import ModelState
from data_plane.models.spec import ModelSpec
from data_plane.routing import choose_variant
from tests.integration.deployments.conftest import Models, Plane


class RecordingLoader:
    """The model manager's part the watch drives; remembers the calls and what was routable then."""

    def __init__(self) -> None:
        self.watch: DeploymentWatch | None = None
        self.loaded: list[tuple[str, int]] = []
        self.unloaded: list[tuple[str, int]] = []
        self.routable_while_loading: list[set[str]] = []

    async def ensure_loaded(self, spec: ModelSpec) -> None:
        await asyncio.sleep(0.05)  # a load takes a while; the old plan keeps serving meanwhile
        self.loaded.append(spec.key)
        if self.watch is not None:
            plans = self.watch.current().plans.values()
            self.routable_while_loading.append({v.name for p in plans for v in p.variants})

    async def unload(self, name: str, version: int) -> None:
        self.unloaded.append((name, version))

    def state(self, name: str, version: int) -> ModelState:
        loaded = self.loaded.count((name, version)) > self.unloaded.count((name, version))
        return ModelState.READY if loaded else ModelState.UNLOADED


async def test_plans_follow_the_control_plane_and_survive_its_outage(
    plane: Plane, deployments: DeploymentsClient, models: Models, tmp_path: Path
) -> None:
    blue, green = models.register("eta"), models.register("eta")
    created = await asyncio.to_thread(deployments.create, "eta-prod", [variant("eta", blue, name="blue")])
    snapshot_path = tmp_path / "plans" / "deployment_plans.pb"
    loader = RecordingLoader()
    watch = DeploymentWatch(plane.address, snapshot_path, loader, backoff_initial_s=0.05, backoff_max_s=0.2)
    loader.watch = watch
    watch.start()
    try:
        plans = await watch.wait_for_revision(created.plan_revision, 10)
        plan = plans.get("eta-prod")
        assert plan is not None and choose_variant(plan, "user-1").primary.name == "blue"
        assert loader.loaded == [("eta", blue)]

        canary = await asyncio.to_thread(
            deployments.start_canary, "eta-prod", "eta", green, variant_name="green"
        )
        plans = await watch.wait_for_revision(canary.plan_revision, 10)
        assert loader.loaded == [("eta", blue), ("eta", green)]
        assert loader.routable_while_loading[-1] == {"blue"}  # green was loaded before it got traffic
        plan = plans.get("eta-prod")
        assert plan is not None
        routed = {choose_variant(plan, f"user-{i}").primary.name for i in range(500)}
        assert routed == {"blue", "green"}

        rolled = await asyncio.to_thread(deployments.rollback, "eta-prod", reason="test")
        await watch.wait_for_revision(rolled.plan_revision, 10)
        assert loader.unloaded == [("eta", green)]
        assert snapshot_path.exists()

        await asyncio.to_thread(plane.server.stop)  # the control plane goes away
        await asyncio.sleep(0.3)
        assert watch.current().revision == rolled.plan_revision  # serving goes on from the cached plans
    finally:
        await watch.stop()

    restarted_loader = RecordingLoader()
    restarted = DeploymentWatch(plane.address, snapshot_path, restarted_loader, backoff_initial_s=0.05)
    assert await restarted.load_persisted()
    plan = restarted.current().get("eta-prod")
    assert plan is not None and [v.name for v in plan.variants] == ["blue"]
    assert restarted_loader.loaded == [("eta", blue)]
    assert restarted.has_plans.is_set()
