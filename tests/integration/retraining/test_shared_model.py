"""Two deployments serving one model (staging and production, two regions), each with its retraining
triggers, on real cores. A model has one ``challenger`` alias, which names the version whose promotion is
in progress; so while one deployment retrains the model (its job runs, or its challenger's promotion is in
progress) the other does not, and says why. Before, the second deployment's challenger took the alias
from the first's while that one waited for its reviewer: a reviewer going by the alias approved the other
deployment's version, and the first challenger waited with no alias naming it."""

from __future__ import annotations

import numpy as np
import pytest

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import jobs_pb2 as jpb
from clients.aether.v1 import model_registry_pb2 as mpb
from clients.aether.v1 import monitoring_pb2 as monpb
from clients.aether.v1 import retraining_pb2 as pb
from control_plane.deployments.canary import Action, Decision
from control_plane.monitoring import config as monitor_configs
from control_plane.retraining import config as configs
from control_plane.retraining.promotion import AWAITING_APPROVAL, CANARY, PROMOTED
from control_plane.retraining.triggers import running_elsewhere, still_promoting
from tests.integration.retraining.conftest import TRUE_W, World
from tests.integration.retraining.test_closed_loop import deploy_trained_champion
from tests.integration.retraining.test_promotion import challenger_alias, job_ran, stored

OTHER = "eta-staging"


def serve_the_champion_on_another_deployment(world: World, champion: int) -> None:
    world.deployments.create(
        dpb.CreateDeploymentRequest(
            name=OTHER,
            variants=[dpb.Variant(model_name="eta", version=champion, role=dpb.VARIANT_ROLE_PRIMARY)],
        ),
        actor="operator",
    )
    monitor_configs.put_config(
        world.sessions,
        monpb.MonitorConfig(deployment=OTHER, task=monpb.TASK_TYPE_REGRESSION, alert_metric="mae"),
        actor="operator",
    )
    for deployment in ("eta", OTHER):
        configs.put_config(
            world.sessions,
            pb.TriggerConfig(
                deployment=deployment,
                enabled=True,
                gates=pb.EvaluationGates(metric="mae", max_latency_ratio=-1),
                promotion=pb.PromotionPolicy(manual_approval=True),
            ),
            actor="operator",
        )


@pytest.fixture
def shared(world: World) -> int:
    """ "eta" and OTHER both serve the same trained champion of model "eta"; returns its version."""
    spec = jpb.JobSpec(name="eta-train", entrypoint=jpb.Entrypoint(module="json"))
    champion = deploy_trained_champion(world, spec, TRUE_W + np.array([0.3, -0.3, 0.3, -0.3]))
    serve_the_champion_on_another_deployment(world, champion)
    return champion


async def test_another_deployment_of_the_model_waits_for_a_challenger_under_review(
    world: World, shared: int
) -> None:
    submitted = await world.retrainer.trigger_now("eta", "alice", "new data")
    assert submitted.outcome == "submitted"
    first = job_ran(world, submitted.job_id, TRUE_W + 0.01)
    await world.retrainer.tick()  # evaluated, passed, waiting for a reviewer
    assert stored(world).promotion_status == AWAITING_APPROVAL and challenger_alias(world) == first

    jobs = len(world.jobs.list()[0])
    held = await world.retrainer.trigger_now(OTHER, "bob", "staging data")
    waiting = still_promoting(f"eta v{first} ({AWAITING_APPROVAL})", deployment="eta")
    assert (held.outcome, held.triggered, list(held.reasons)) == ("not_triggered", False, [waiting])
    assert "deployment 'eta'" in waiting
    ticked = [d for d in await world.retrainer.tick() if d.deployment == OTHER]
    assert [list(d.reasons) for d in ticked] == [[waiting]]
    assert len(world.jobs.list()[0]) == jobs and challenger_alias(world) == first

    # The reviewer goes by the alias: it names the version "eta" is promoting.
    world.registry.review("eta", challenger_alias(world) or 0, mpb.APPROVED, "ok", actor="reviewer")
    await world.retrainer.advance_promotions()
    assert stored(world).promotion_status == CANARY
    canary = world.deployments.get("eta").canary
    world.deployments.apply_decision("eta", canary, Decision(Action.PROMOTE, "healthy"), actor="canary")
    await world.retrainer.advance_promotions()
    assert stored(world).promotion_status == PROMOTED

    again = await world.retrainer.trigger_now(OTHER, "bob", "staging data")
    assert again.triggered and again.outcome == "submitted"


async def test_another_deployment_of_the_model_waits_for_a_running_retraining(
    world: World, shared: int
) -> None:
    """Both jobs running at once would give two challengers of the model, both passing at about the same
    time: the second took the alias from the first."""
    submitted = await world.retrainer.trigger_now("eta", "alice", "new data")
    assert submitted.outcome == "submitted"
    held = await world.retrainer.trigger_now(OTHER, "bob", "staging data")
    assert (held.outcome, list(held.reasons)) == ("not_triggered", [running_elsewhere("eta", "eta")])
    assert held.job_id == ""
