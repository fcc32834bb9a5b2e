"""A person deploys another version while a retraining job runs: the challenger is judged against the
version the deployment serves when its job has finished, on real cores. It was judged against the version
that served when the retraining triggered, which no longer served: one that lost to that old version was
rejected in the registry for good without ever being compared with the serving one, and one that beat it
was approved (deployable) and then failed as superseded."""

from __future__ import annotations

import numpy as np

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import model_registry_pb2 as mpb
from control_plane.retraining import evaluation_records, records
from control_plane.retraining.promotion import CANARY
from tests.integration.retraining.conftest import TRUE_W, World
from tests.integration.retraining.test_closed_loop import (
    primary_version,
    submitted_decision,
    succeeded_retraining_job,
)
from tests.integration.retraining.test_promotion import stored
from tests.unit.retraining.models import linear


def deploy(world: World, version: int, model: str = "eta") -> None:
    """A person serves ``version`` of ``model`` on deployment "eta" (no canary, no retraining)."""
    world.deployments.update(
        dpb.UpdateDeploymentRequest(
            name="eta",
            replace_variants=True,
            variants=[dpb.Variant(model_name=model, version=version, role=dpb.VARIANT_ROLE_PRIMARY)],
        ),
        actor="alice",
    )


async def test_the_challenger_is_judged_against_the_version_serving_when_it_is_evaluated(
    world: World,
) -> None:
    decision = submitted_decision(world)  # triggered while world.champion served
    better = world.register(linear(TRUE_W + 0.001), approve=True)  # deployed by a person meanwhile
    deploy(world, better)
    challenger = world.register(linear(TRUE_W + 0.05))  # better than the old champion, worse than `better`

    evaluation = await world.retrainer.evaluate_challenger(decision, challenger)

    assert evaluation.champion_version == better != world.champion
    assert not evaluation.passed
    assert evaluation.champion_metrics["mae"] < evaluation.challenger_metrics["mae"]
    assert primary_version(world) == better
    assert world.registry.get_version("eta", challenger).approval.status == mpb.REJECTED


async def test_a_challenger_better_than_the_version_serving_now_goes_on_to_its_canary(world: World) -> None:
    decision = submitted_decision(world)
    newer = world.register(linear(TRUE_W + np.array([0.2, -0.2, 0.2, -0.2])), approve=True)
    deploy(world, newer)
    challenger = world.register(linear(TRUE_W + 0.01))

    evaluation = await world.retrainer.evaluate_challenger(decision, challenger)

    assert evaluation.passed and evaluation.champion_version == newer
    assert stored(world).promotion_status == CANARY  # not "failed" as superseded by the version it beat
    assert world.deployments.get("eta").canary.version == challenger


async def test_a_deployment_that_serves_another_model_now_fails_the_evaluation(world: World) -> None:
    """The challenger is of the model the deployment served when it triggered: there is no version of that
    model to judge it against, so its evaluation fails and the registry is not touched."""
    job, run = succeeded_retraining_job(world)
    challenger = world.register(linear(TRUE_W + 0.01), run_id=run.run_id)
    decision = submitted_decision(world, job.job_id)
    artifact = world.registry.artifacts.put_bytes(linear(TRUE_W))
    request = mpb.CreateModelVersionRequest(
        model_name="eta2", artifact_sha256=artifact.sha256, create_model=True
    )
    other = int(world.registry.create_version(request, actor="trainer").version)
    world.registry.review("eta2", other, mpb.APPROVED, "ok", actor="reviewer")
    deploy(world, other, model="eta2")

    await world.retrainer.follow_up()

    ended = next(d for d in records.list_decisions(world.sessions, "eta") if d.id == decision.id)
    assert ended.outcome == "evaluation_failed"
    assert f"deployment 'eta' now serves eta2 v{other}" in ended.reasons[-1]
    assert evaluation_records.list_evaluations(world.sessions, "eta") == []
    assert world.registry.get_version("eta", challenger).approval.status == mpb.PENDING_MANUAL_APPROVAL
