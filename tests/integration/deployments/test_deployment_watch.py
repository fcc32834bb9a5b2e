"""The data plane's deployment watch against a real control plane: plans arrive and are routed from, a
new variant's model is loaded before the plan that routes to it is installed, versions no plan uses are
unloaded, and a restart during a control-plane outage serves the persisted plans."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import grpc
import grpc.aio
import numpy as np
import pytest

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import deployments_pb2_grpc as dpb_grpc
from clients.aether.v1 import model_registry_pb2 as mpb
from clients.errors import FailedPrecondition, NotFound
from clients.inference import grpc_predict_v2_pb2 as oip_pb
from clients.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from clients.sdk.deployments import DeploymentsClient, variant
from clients.sdk.inference import build_infer_request
from control_plane.settings import ControlPlaneSettings
from data_plane.api.inference_v2 import InferenceV2Servicer, add_to_server
from data_plane.deployment_watch import DeploymentWatch
from data_plane.metrics import ServingMetrics
from data_plane.models.manager import ModelManager
from data_plane.models.spec import ModelSpec
from data_plane.models.version import ModelState, Use
from data_plane.routing import choose_variant
from tests.integration.deployments.conftest import Models, Plane, ThreadedControlPlane
from tests.support import onnx_models
from tests.support.scripted_plans import ScriptedPlans

PRIMARY, CANARY = dpb.VARIANT_ROLE_PRIMARY, dpb.VARIANT_ROLE_CANARY


class RecordingLoader:
    """The model manager's part the watch drives; remembers the calls and what was routable then."""

    def __init__(self) -> None:
        self.watch: DeploymentWatch | None = None
        self.loaded: list[tuple[str, int]] = []
        self.unloaded: list[tuple[str, int]] = []
        self.routable_while_loading: list[set[str]] = []

    async def ensure_loaded(self, spec: ModelSpec, *, use: Use = Use.DIRECT) -> None:
        await asyncio.sleep(0.05)  # a load takes a while; the old plan keeps serving meanwhile
        self.loaded.append(spec.key)
        if self.watch is not None:
            plans = self.watch.current().plans.values()
            self.routable_while_loading.append({v.name for p in plans for v in p.variants})

    def set_plan_use(self, name: str, version: int, use: Use) -> None:
        pass

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


class BreakableLoader:
    """A FAKE model manager for load faults that are slow or awkward to cause with real artifacts: a load
    of a version in ``failing`` fails after ``delay_s``; unloading a version while it loads cancels that
    load (the manager cancels its load task, and the caller awaiting it gets CancelledError)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.failing: set[tuple[str, int]] = set()
        self.states: dict[tuple[str, int], ModelState] = {}
        self._loading: dict[tuple[str, int], asyncio.Task[None]] = {}

    async def _load(self, key: tuple[str, int]) -> None:
        await asyncio.sleep(self.delay_s if key in self.failing else 0.0)
        if key in self.failing:
            self.states[key] = ModelState.FAILED
            raise FailedPrecondition(f"model {key} is broken")
        self.states[key] = ModelState.READY

    async def ensure_loaded(self, spec: ModelSpec, *, use: Use = Use.DIRECT) -> None:
        self.states[spec.key] = ModelState.LOADING
        task = asyncio.ensure_future(self._load(spec.key))
        self._loading[spec.key] = task
        try:
            await task
        finally:
            self._loading.pop(spec.key, None)

    def set_plan_use(self, name: str, version: int, use: Use) -> None:
        pass

    async def unload(self, name: str, version: int) -> None:
        task = self._loading.get((name, version))
        if task is not None:
            task.cancel()
        self.states.pop((name, version), None)

    def state(self, name: str, version: int) -> ModelState:
        return self.states.get((name, version), ModelState.UNLOADED)


async def until_state(
    loader: BreakableLoader, key: tuple[str, int], state: ModelState, why: str = ""
) -> None:
    """Waits (10 s at most) until ``loader`` holds ``key`` in ``state``."""
    deadline = asyncio.get_running_loop().time() + 10
    while loader.state(*key) is not state:
        assert asyncio.get_running_loop().time() < deadline, why or f"{key} never became {state}"
        await asyncio.sleep(0.01)


async def test_a_broken_version_holds_up_no_plan_and_comes_back_once_it_loads(
    plane: Plane, deployments: DeploymentsClient, models: Models, tmp_path: Path
) -> None:
    """Every snapshot reloaded each FAILED version before it went live, so one broken version held up
    every plan change, other deployments' too, for as long as its load took. Failed versions are now
    retried in the background only, and load once they can."""
    broken, b1, b2 = models.register("a"), models.register("b"), models.register("b")
    loader = BreakableLoader(delay_s=3.0)
    loader.failing.add(("a", broken))
    await asyncio.to_thread(deployments.create, "dep-a", [variant("a", broken)])
    created = await asyncio.to_thread(deployments.create, "dep-b", [variant("b", b1)])
    watch = DeploymentWatch(
        plane.address, tmp_path / "plans.pb", loader, backoff_initial_s=0.05, retry_initial_s=2.0,
        retry_max_s=2.0,
    )  # fmt: skip
    watch.start()
    try:
        await watch.wait_for_revision(created.plan_revision, 20)
        assert loader.state("a", broken) is ModelState.FAILED  # the retry loop's first try is 2 s away
        moved = await asyncio.to_thread(deployments.start_canary, "dep-b", "b", b2)
        started = asyncio.get_running_loop().time()
        await watch.wait_for_revision(moved.plan_revision, 20)
        assert asyncio.get_running_loop().time() - started < 2.0  # not a broken load's 3 s
        loader.failing.clear()  # the artifact store answers again
        await until_state(loader, ("a", broken), ModelState.READY)
    finally:
        await watch.stop()


async def test_the_retry_loop_survives_a_load_cancelled_by_a_plan_that_drops_its_version(
    plane: Plane, deployments: DeploymentsClient, models: Models, tmp_path: Path
) -> None:
    """A plan that dropped a version while the retry loop was loading it cancelled that load, and the
    CancelledError ended the loop: no failed version was retried again until a restart."""
    gone, later = models.register("a"), models.register("c")
    loader = BreakableLoader(delay_s=1.0)
    loader.failing.update({("a", gone), ("c", later)})
    await asyncio.to_thread(deployments.create, "dep-a", [variant("a", gone)])
    created = await asyncio.to_thread(deployments.create, "dep-c", [variant("c", later)])
    watch = DeploymentWatch(
        plane.address, tmp_path / "plans.pb", loader, backoff_initial_s=0.05, retry_initial_s=0.05,
        retry_max_s=0.1,
    )  # fmt: skip
    watch.start()
    try:
        await watch.wait_for_revision(created.plan_revision, 20)
        await until_state(loader, ("a", gone), ModelState.LOADING)  # the retry loop is loading it
        await asyncio.to_thread(deployments.delete, "dep-a")
        await until_state(loader, ("c", later), ModelState.FAILED)  # that round's try of c ends
        loader.failing.discard(("c", later))  # only a later round can load it now
        await until_state(loader, ("c", later), ModelState.READY, "the retry loop stopped")
    finally:
        await watch.stop()


async def test_plans_follow_a_control_plane_whose_revisions_restarted(
    plane: Plane, deployments: DeploymentsClient, models: Models, tmp_path: Path
) -> None:
    """A control plane restored from a backup (here: a copy of its database taken before anything was
    deployed, at the same address) hands out plan revisions it handed out before, for other content. The
    watch reused a held plan whenever its revision matched, so the data plane went on serving the old
    version. (The copy is the same metadata database, store id and all: a fresh one would be refused.)"""
    backup = tmp_path / "restored.db"
    _sqlite_backup(plane.db_url, backup)
    old = models.register("eta")
    created = await asyncio.to_thread(deployments.create, "eta-prod", [variant("eta", old)])
    loader = RecordingLoader()
    watch = DeploymentWatch(plane.address, tmp_path / "plans.pb", loader, backoff_initial_s=0.05)
    watch.start()
    fresh: ThreadedControlPlane | None = None
    try:
        await watch.wait_for_revision(created.plan_revision, 10)
        await asyncio.to_thread(plane.server.stop)
        settings = ControlPlaneSettings(
            home=tmp_path / "restored", db_url=f"sqlite:///{backup}",
            redis_url=plane.redis_url, listen_addr=plane.address, watch_poll_interval_s=0.1,
        )  # fmt: skip
        fresh = await asyncio.to_thread(ThreadedControlPlane, settings)
        restored = Models(settings.db_url, settings.home)
        try:
            new = [restored.register("eta") for _ in range(2)][-1]
        finally:
            restored.close()
        with DeploymentsClient(plane.address, actor="alice", timeout=20) as client:
            again = await asyncio.to_thread(client.create, "eta-prod", [variant("eta", new)])
        assert again.plan_revision == created.plan_revision and new != old
        deadline = asyncio.get_running_loop().time() + 10
        while (held := watch.current().get("eta-prod")) is None or held.primary.model.version != new:
            assert asyncio.get_running_loop().time() < deadline, "the data plane kept the old plan"
            await asyncio.sleep(0.02)
        assert ("eta", new) in loader.loaded and loader.unloaded == [("eta", old)]
    finally:
        await watch.stop()
        if fresh is not None:
            await asyncio.to_thread(fresh.stop)


def _sqlite_backup(db_url: str, to: Path) -> None:
    """A consistent copy of a SQLite database (SQLite's online backup), as an operator's backup is."""
    source, target = sqlite3.connect(db_url.removeprefix("sqlite:///")), sqlite3.connect(to)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


async def test_waiting_for_a_revision_counts_only_the_plans_of_the_stream_delivering_now(
    tmp_path: Path,
) -> None:
    """A control plane restarted on a fresh database numbers its revisions from 1 again. Waiting for its
    revision 1 compared numbers only, so the plans of revision 3 held from before the restart satisfied
    it at once: the caller went on as if the new control plane's plans were served."""
    plans = ScriptedPlans()
    server = grpc.aio.server()
    dpb_grpc.add_DeploymentsServicer_to_server(plans, server)  # type: ignore[no-untyped-call]
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    watch = DeploymentWatch(
        address, tmp_path / "plans.pb", RecordingLoader(), backoff_initial_s=0.02, backoff_max_s=0.05
    )
    watch.start()
    try:
        await plans.queue.put(dpb.DeploymentPlanSnapshot(revision=3))
        assert (await watch.wait_for_revision(3, 10)).revision == 3
        await plans.queue.put(None)  # the old control plane is gone; the watch reconnects
        deadline = asyncio.get_running_loop().time() + 10
        while plans.streams < 2:
            assert asyncio.get_running_loop().time() < deadline, "the watch never reconnected"
            await asyncio.sleep(0.01)
        await plans.queue.put(dpb.DeploymentPlanSnapshot(revision=1))  # the new control plane's first
        assert (await watch.wait_for_revision(1, 10)).revision == 1
    finally:
        await watch.stop()
        await server.stop(None)


def _variant(spec: ModelSpec, name: str, role: int, percent: float) -> dpb.PlannedVariant:
    model = dpb.ModelServingSpec(
        model_name=spec.name, version=spec.version, artifact_sha256=spec.artifact_sha256,
        artifact_uri=spec.artifact_uri, feature_refs=spec.feature_refs,
        inputs=[mpb.TensorSpec(name=t.name, dtype=t.dtype, shape=t.shape) for t in spec.inputs],
        outputs=[mpb.TensorSpec(name=t.name, dtype=t.dtype, shape=t.shape) for t in spec.outputs],
        serving=dpb.ServingConfig(warmup_requests=1),
    )  # fmt: skip
    return dpb.PlannedVariant(name=name, role=role, traffic_percent=percent, model=model)  # type: ignore[arg-type]


async def test_a_canary_promoted_to_primary_becomes_reachable_by_name(tmp_path: Path) -> None:
    """A canary answers only through its plan (a call naming its model would bypass the canary
    controller); once a plan makes it the primary, a call naming the model reaches it, as it reaches
    every plan's primary. The version was already loaded, so only the promotion can tell the manager."""
    mlp = onnx_models.mlp(input_size=4, hidden=(3,), seed=3)
    v1 = onnx_models.save(mlp, tmp_path / "v1.onnx", "m", 1)
    v2 = onnx_models.save(mlp, tmp_path / "v2.onnx", "m", 2)
    plans = ScriptedPlans()
    server = grpc.aio.server()
    dpb_grpc.add_DeploymentsServicer_to_server(plans, server)  # type: ignore[no-untyped-call]
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    manager = ModelManager()
    watch = DeploymentWatch(address, tmp_path / "plans.pb", manager, backoff_initial_s=0.02)
    watch.start()
    try:
        canary = [_variant(v1, "blue", PRIMARY, 90.0), _variant(v2, "green", CANARY, 10.0)]
        plan = dpb.DeploymentPlan(deployment="d", plan_revision=1, routing_salt="d", variants=canary)
        await plans.queue.put(dpb.DeploymentPlanSnapshot(revision=1, plans=[plan]))
        await watch.wait_for_revision(1, 20)
        assert manager.versions("m", by_name=True) == [1]
        with pytest.raises(NotFound, match="answers only through the deployment plan"):
            manager.named_lease("m", 2)
        promoted = dpb.DeploymentPlan(
            deployment="d",
            plan_revision=2,
            routing_salt="d",
            variants=[_variant(v2, "green", PRIMARY, 100.0)],
        )
        await plans.queue.put(dpb.DeploymentPlanSnapshot(revision=2, plans=[promoted]))
        await watch.wait_for_revision(2, 20)
        with manager.named_lease("m", 2) as lease, manager.named_lease("m", None) as newest:
            assert lease.spec.version == newest.spec.version == 2
    finally:
        await watch.stop()
        await manager.close()
        await server.stop(None)


async def test_a_primary_demoted_to_canary_answers_only_through_its_plan(tmp_path: Path) -> None:
    """An UpdateDeployment that makes v1 primary at 90 % and keeps v2, the primary until then, as a 10 %
    canary left v2 reachable by name: ModelInfer naming v2 reached the canary directly, and ModelInfer
    naming no version (tritonclient's default) went to v2 as the newest version, so all unversioned
    traffic bypassed the canary controller. The version was loaded already and its spec did not change,
    so only the new plan's roles can tell the manager; a demoted primary is then absent by name, for
    ModelInfer, ModelMetadata (and its versions list) and ModelReady alike."""
    mlp = onnx_models.mlp(input_size=4, hidden=(3,), seed=3)
    v1 = onnx_models.save(mlp, tmp_path / "v1.onnx", "m", 1)
    v2 = onnx_models.save(mlp, tmp_path / "v2.onnx", "m", 2)
    plans = ScriptedPlans()
    server = grpc.aio.server()
    dpb_grpc.add_DeploymentsServicer_to_server(plans, server)  # type: ignore[no-untyped-call]
    manager = ModelManager()
    add_to_server(InferenceV2Servicer(manager, ServingMetrics()), server)
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    watch = DeploymentWatch(address, tmp_path / "plans.pb", manager, backoff_initial_s=0.02)
    watch.start()
    x = np.ones((1, 4), np.float32)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            oip = oip_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
            first = dpb.DeploymentPlan(
                deployment="d", plan_revision=1, routing_salt="d",
                variants=[_variant(v2, "blue", PRIMARY, 100.0)],
            )  # fmt: skip
            await plans.queue.put(dpb.DeploymentPlanSnapshot(revision=1, plans=[first]))
            await watch.wait_for_revision(1, 20)
            answer = await oip.ModelInfer(build_infer_request("m", {"input": x}), timeout=5)
            assert answer.model_version == "2"  # the primary: reachable by name
            in_flight = manager.named_lease("m", 2)  # a call admitted before the demotion

            demoted = dpb.DeploymentPlan(
                deployment="d", plan_revision=2, routing_salt="d",
                variants=[_variant(v1, "new", PRIMARY, 90.0), _variant(v2, "blue", CANARY, 10.0)],
            )  # fmt: skip
            await plans.queue.put(dpb.DeploymentPlanSnapshot(revision=2, plans=[demoted]))
            await watch.wait_for_revision(2, 20)
            # A call naming no version reaches the primary, not the newer canary...
            answer = await oip.ModelInfer(build_infer_request("m", {"input": x}), timeout=5)
            assert answer.model_version == "1"
            # ...and one naming the canary does not reach it.
            for call in (
                oip.ModelInfer(build_infer_request("m", {"input": x}, version=2), timeout=5),
                oip.ModelMetadata(oip_pb.ModelMetadataRequest(name="m", version="2"), timeout=5),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call
                assert info.value.code() == grpc.StatusCode.NOT_FOUND, info.value.details()
                assert "answers only through the deployment plans" in (info.value.details() or "")
            assert not (await oip.ModelReady(oip_pb.ModelReadyRequest(name="m", version="2"))).ready
            assert (await oip.ModelReady(oip_pb.ModelReadyRequest(name="m"))).ready
            meta = await oip.ModelMetadata(oip_pb.ModelMetadataRequest(name="m"), timeout=5)
            assert list(meta.versions) == ["1"]
            with manager.lease("m", 2) as routed:  # the plan still routes its canary share to it
                assert routed.spec.version == 2
            with in_flight:  # the call admitted before the demotion is answered
                assert (await in_flight.run(in_flight.prepare({"input": x}), None))["output"].shape == (1, 1)

            back = dpb.DeploymentPlan(
                deployment="d", plan_revision=3, routing_salt="d",
                variants=[_variant(v2, "blue", PRIMARY, 100.0)],
            )  # fmt: skip
            await plans.queue.put(dpb.DeploymentPlanSnapshot(revision=3, plans=[back]))
            await watch.wait_for_revision(3, 20)  # promoted again: reachable by name again
            answer = await oip.ModelInfer(build_infer_request("m", {"input": x}, version=2), timeout=5)
            assert answer.model_version == "2"
    finally:
        await watch.stop()
        await manager.close()
        await server.stop(None)
