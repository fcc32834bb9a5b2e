"""Which metadata database a watch follows (``store_id``, data_plane.watch_stream), against a real grpc.aio
control-plane stand-in that streams the plan snapshots a test puts on its queue: nothing held accepts any
database; the held one is followed; another is refused (kept out of the file, counted, one error per
stream connection) until ``accept_store_id`` names it; a snapshot or a file without an id (a control
plane older than the field) is accepted as before, and whatever database comes after it too."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc.aio
import pytest

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import deployments_pb2_grpc as dpb_grpc
from data_plane.deployment_watch import DeploymentWatch, load_plans_snapshot
from data_plane.watch_stream import save_snapshot
from tests.integration.deployments.test_deployment_watch import RecordingLoader
from tests.support.scripted_plans import ScriptedPlans

STORE_A = "0b5cbd47-2b8e-4b5e-a4a2-0c7b1b0f0a11"
STORE_B = "6f1d2c3e-9a8b-4c7d-8e6f-5a4b3c2d1e0f"
WAIT_S = 20.0


def _plans(revision: int, store_id: str, *deployments: str) -> dpb.DeploymentPlanSnapshot:
    """Each deployment serves model ``m`` version 1 (the recording loader only notes its loads)."""
    primary = dpb.PlannedVariant(
        name="blue", role=dpb.VARIANT_ROLE_PRIMARY, traffic_percent=100.0,
        model=dpb.ModelServingSpec(model_name="m", version=1),
    )  # fmt: skip
    return dpb.DeploymentPlanSnapshot(
        revision=revision,
        store_id=store_id,
        plans=[
            dpb.DeploymentPlan(deployment=d, plan_revision=revision, routing_salt=d, variants=[primary])
            for d in deployments
        ],
    )


class Harness:
    def __init__(self, tmp_path: Path, plans: ScriptedPlans, address: str) -> None:
        self.path = tmp_path / "plans.pb"
        self.plans, self.address = plans, address
        self.refusals: list[str] = []

    async def watch(self, accept_store_id: str = "") -> DeploymentWatch:
        watch = DeploymentWatch(
            self.address, self.path, RecordingLoader(), backoff_initial_s=0.02, backoff_max_s=0.05,
            accept_store_id=accept_store_id, on_refused=self.refusals.append,
        )  # fmt: skip
        await watch.load_persisted()
        watch.start()
        return watch

    async def deliver(self, watch: DeploymentWatch, snapshot: dpb.DeploymentPlanSnapshot) -> None:
        """Puts ``snapshot`` on the stream and returns once the watch installed or refused it."""
        refused = len(self.refusals)
        await self.plans.queue.put(snapshot)
        await until(
            lambda: (
                len(self.refusals) > refused
                or (watch.current().revision == snapshot.revision and watch.store_id == snapshot.store_id)
            ),
            f"revision {snapshot.revision} was neither installed nor refused",
        )

    async def reconnect(self) -> None:
        streams = self.plans.streams
        await self.plans.queue.put(None)
        await until(lambda: self.plans.streams > streams, "the watch never reconnected")


def _held_store(path: Path) -> str | None:
    held = load_plans_snapshot(path)
    return None if held is None else held.store_id


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.01)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    plans = ScriptedPlans()
    server = grpc.aio.server()
    dpb_grpc.add_DeploymentsServicer_to_server(plans, server)  # type: ignore[no-untyped-call]
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    yield Harness(tmp_path, plans, address)
    await server.stop(None)


def _refusal_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and "refusing" in r.getMessage()
    ]


async def test_a_first_start_accepts_any_database_and_then_refuses_another(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aether.data_plane.watch_stream")
    watch = await harness.watch()
    try:
        await harness.deliver(watch, _plans(1, STORE_A, "dep"))  # nothing held: taken, and its id kept
        assert watch.store_id == STORE_A and watch.current().get("dep") is not None
        await harness.deliver(watch, _plans(2, STORE_A, "dep", "other"))  # the same database: followed
        assert watch.current().revision == 2 and not harness.refusals

        await harness.reconnect()  # a control plane on database B takes over the address
        await harness.deliver(watch, _plans(1, STORE_B))
        await harness.deliver(watch, _plans(2, STORE_B))
        assert harness.refusals == ["other_store", "other_store"]
        assert watch.current().revision == 2 and watch.current().get("dep") is not None
        assert watch.store_id == STORE_A and watch.refused_store_id == STORE_B
        held = load_plans_snapshot(harness.path)
        assert held is not None and held.store_id == STORE_A and len(held.plans) == 2
        lines = _refusal_lines(caplog)
        assert len(lines) == 1, lines  # one per stream connection, not one per snapshot
        assert STORE_A in lines[0] and STORE_B in lines[0] and harness.address in lines[0]
        assert f"--accept-store-id {STORE_B}" in lines[0]

        await harness.reconnect()  # still B on the next connection: said again, once
        await harness.deliver(watch, _plans(3, STORE_B))
        assert len(_refusal_lines(caplog)) == 2

        await harness.reconnect()  # A is back (the operator fixed AETHER_DB_URL): followed again
        await harness.deliver(watch, _plans(3, STORE_A, "dep"))
        assert watch.current().revision == 3 and watch.refused_store_id == ""
        assert len(harness.refusals) == 3
    finally:
        await watch.stop()


async def test_the_accepted_database_replaces_the_persisted_one_and_no_other_does(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    save_snapshot(harness.path, _plans(7, STORE_A, "dep").SerializeToString())
    caplog.set_level(logging.INFO, logger="aether.data_plane.watch_stream")
    watch = await harness.watch(accept_store_id=STORE_B)
    try:
        assert watch.store_id == STORE_A and watch.current().revision == 7  # served from the file
        await harness.deliver(watch, _plans(1, STORE_B))
        assert watch.store_id == STORE_B and watch.current().get("dep") is None and not harness.refusals
        # The file is written after the snapshot is installed (in a thread): wait for it, not a turn.
        await until(lambda: _held_store(harness.path) == STORE_B, "the accepted snapshot was never persisted")
        assert any(STORE_B in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)

        await harness.reconnect()  # database A again: now the other one, refused
        await harness.deliver(watch, _plans(8, STORE_A, "dep"))
        assert harness.refusals == ["other_store"] and watch.store_id == STORE_B
    finally:
        await watch.stop()


async def test_snapshots_and_files_without_a_store_id_are_accepted_as_before(harness: Harness) -> None:
    save_snapshot(harness.path, _plans(5, "", "dep").SerializeToString())  # written by an older data plane
    watch = await harness.watch()
    try:
        assert watch.store_id == "" and watch.current().revision == 5
        await harness.deliver(watch, _plans(1, STORE_A))  # unknown database held: the next is taken
        assert watch.store_id == STORE_A and watch.current().get("dep") is None

        await harness.reconnect()  # an older control plane (no store id) on whatever database
        await harness.deliver(watch, _plans(2, "", "dep"))
        assert watch.current().get("dep") is not None and watch.store_id == ""
        await harness.deliver(watch, _plans(3, STORE_B))  # after an unknown one: taken too
        assert watch.store_id == STORE_B and not harness.refusals
    finally:
        await watch.stop()


async def test_another_database_is_followed_while_what_is_held_lists_nothing(harness: Harness) -> None:
    """A home whose database was deleted before anything was applied (``dev up`` again): the held
    snapshot lists nothing, so another database can empty nothing, and refusing it left the data plane
    serving nothing of what the user then applied to the new one."""
    save_snapshot(harness.path, _plans(3, STORE_A).SerializeToString())  # database A: no plan
    watch = await harness.watch()
    try:
        assert watch.store_id == STORE_A
        await harness.deliver(watch, _plans(1, STORE_B, "dep"))
        assert watch.store_id == STORE_B and watch.current().get("dep") is not None
        assert not harness.refusals
        await harness.reconnect()  # now B's plans are held: A (with nothing, or anything) is refused
        await harness.deliver(watch, _plans(4, STORE_A))
        assert harness.refusals == ["other_store"] and watch.current().get("dep") is not None
    finally:
        await watch.stop()
