"""The hand-off of a challenger that passed its gates to its deployment, on real cores: while a canary of
another version runs the promotion waits, visibly and with an alert, and the loop starts it once the
deployment is free; if that canary replaced the champion meanwhile, the challenger is superseded. An
evaluation whose promotion never started (the control plane stopped in between) is started by the loop.
A shadow phase fails when the shadow failed the mirrored calls, or when there was nothing to compare.
While a promotion is in progress its deployment does not retrain, so the ``challenger`` alias keeps
naming the version being promoted."""

from __future__ import annotations

import logging
import time

import numpy as np
import numpy.typing as npt
import pytest
from sqlalchemy import func, select, update

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import jobs_pb2 as jpb
from clients.aether.v1 import model_registry_pb2 as mpb
from clients.aether.v1 import retraining_pb2 as pb
from clients.errors import FailedPrecondition
from control_plane.audit.tables import AuditEntryRow
from control_plane.db import read_session, write_session
from control_plane.deployments.canary import Action, Decision
from control_plane.jobs.tables import JobRow
from control_plane.model_registry.registry import ModelRegistry
from control_plane.retraining import config as configs
from control_plane.retraining import evaluation_records, records
from control_plane.retraining.evaluation import EvaluationResult, ModelScore
from control_plane.retraining.promotion import (
    AWAITING_APPROVAL,
    CANARY,
    FAILED,
    PENDING_CANARY,
    PENDING_SHADOW,
    PROMOTED,
    ROLLED_BACK,
    SHADOW,
)
from control_plane.retraining.triggers import still_promoting
from control_plane.tracking.store import TrackingStore
from tests.integration.retraining.conftest import STREAM, TRUE_W, World, restarted
from tests.integration.retraining.test_closed_loop import (
    deploy_trained_champion,
    primary_version,
    submitted_decision,
)
from tests.unit.retraining.models import linear

ALERTS = "aether.control_plane.monitoring"


def configure(world: World, promotion: pb.PromotionPolicy) -> None:
    """Triggers on for "eta", gated on MAE (the latency ratio off), promoted by ``promotion``."""
    configs.put_config(
        world.sessions,
        pb.TriggerConfig(
            deployment="eta",
            enabled=True,
            gates=pb.EvaluationGates(metric="mae", max_latency_ratio=-1),
            promotion=promotion,
        ),
        actor="operator",
    )


def start_other_canary(world: World) -> int:
    """Someone else's canary on the deployment: the deployments core runs one at a time."""
    other = world.register(linear(TRUE_W + 0.02), approve=True)
    world.deployments.start_canary(
        dpb.StartCanaryRequest(name="eta", model_name="eta", version=other), actor="alice"
    )
    return other


def stored(world: World) -> pb.Evaluation:
    return evaluation_records.list_evaluations(world.sessions, "eta")[0]


def audited(world: World, action: str) -> int:
    with read_session(world.sessions) as session:
        count = session.execute(
            select(func.count()).select_from(AuditEntryRow).where(AuditEntryRow.action == action)
        ).scalar_one()
    return int(count)


async def test_a_challenger_waits_for_a_running_canary_and_enters_once_it_ends(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    start_other_canary(world)
    challenger = world.register(linear(TRUE_W + 0.01))
    with caplog.at_level(logging.WARNING, logger=ALERTS):
        evaluation = await world.retrainer.evaluate_challenger(submitted_decision(world), challenger)
    assert evaluation.passed
    waiting = stored(world)
    assert waiting.promotion_status == PENDING_CANARY
    assert "waiting for deployment 'eta'" in waiting.promotion_reason
    assert "canary 'eta-v2' running" in waiting.promotion_reason
    assert f"promotion of eta v{challenger} on eta is waiting for the deployment" in caplog.text
    assert world.registry.get_version("eta", challenger).approval.status == mpb.APPROVED

    writes = audited(world, "promotion_pending_canary")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=ALERTS):
        for _ in range(3):  # the other canary still runs: nothing moves, nothing is written again
            await world.retrainer.advance_promotions()
    assert stored(world).promotion_status == PENDING_CANARY
    assert audited(world, "promotion_pending_canary") == writes and "waiting" not in caplog.text

    world.deployments.rollback("eta", reason="not good enough", actor="alice")
    await world.retrainer.advance_promotions()
    assert stored(world).promotion_status == CANARY
    canary = world.deployments.get("eta").canary
    assert canary.status == dpb.CANARY_STATUS_PROGRESSING and canary.version == challenger


async def test_a_waiting_challenger_still_gets_its_shadow_phase(world: World) -> None:
    configure(world, pb.PromotionPolicy(shadow_seconds=600))
    start_other_canary(world)
    challenger = world.register(linear(TRUE_W + 0.01))
    await world.retrainer.evaluate_challenger(submitted_decision(world), challenger)
    assert stored(world).promotion_status == PENDING_SHADOW
    assert not any(v.role == dpb.VARIANT_ROLE_SHADOW for v in world.deployments.get("eta").variants)

    world.deployments.rollback("eta", actor="alice")
    await world.retrainer.advance_promotions()
    assert stored(world).promotion_status == SHADOW
    shadows = [v for v in world.deployments.get("eta").variants if v.role == dpb.VARIANT_ROLE_SHADOW]
    assert [(v.model_name, v.version) for v in shadows] == [("eta", challenger)]


async def test_a_passed_shadow_phase_waits_for_a_canary_started_meanwhile(world: World) -> None:
    policy = pb.PromotionPolicy(shadow_seconds=600, min_agreement=0.9)
    configure(world, policy)
    challenger = world.register(linear(TRUE_W + 0.01))
    await world.retrainer.evaluate_challenger(submitted_decision(world), challenger)
    shadowing = stored(world)
    assert shadowing.promotion_status == SHADOW
    other = start_other_canary(world)
    later = shadowing.updated_at_us + 601_000_000
    assert world.retrainer.promoter.advance(shadowing, policy, later, 0.95) == PENDING_CANARY
    waiting = stored(world)
    assert waiting.agreement_rate == 0.95 and f"canary 'eta-v{other}' running" in waiting.promotion_reason
    assert not any(v.role == dpb.VARIANT_ROLE_SHADOW for v in world.deployments.get("eta").variants)

    world.deployments.rollback("eta", actor="alice")
    await world.retrainer.advance_promotions()
    assert stored(world).promotion_status == CANARY
    assert world.deployments.get("eta").canary.version == challenger


async def test_a_shadow_phase_with_answers_that_cannot_be_compared_says_so(world: World) -> None:
    # Answers of other classes used to be compared column by column into a rate that meant nothing.
    gated = pb.PromotionPolicy(shadow_seconds=600, min_agreement=0.9)
    configure(world, gated)
    challenger = world.register(linear(TRUE_W + 0.01))
    await world.retrainer.evaluate_challenger(submitted_decision(world), challenger)
    shadowing = stored(world)
    assert shadowing.promotion_status == SHADOW
    later = shadowing.updated_at_us + 601_000_000
    why = "the shadow eta v2 declares the classes [1, 2] and the primary eta v1 [1, 3]"
    assert world.retrainer.promoter.advance(shadowing, gated, later, None, not_comparable=why) == FAILED
    failed = stored(world)
    assert failed.promotion_reason == f"shadow agreement not comparable: {why}; min_agreement 90.0%"
    assert not failed.HasField("agreement_rate")
    assert not any(v.role == dpb.VARIANT_ROLE_SHADOW for v in world.deployments.get("eta").variants)


async def test_an_ungated_shadow_phase_that_cannot_compare_goes_on_to_the_canary(world: World) -> None:
    measured_only = pb.PromotionPolicy(shadow_seconds=600)
    configure(world, measured_only)
    challenger = world.register(linear(TRUE_W + 0.01))
    await world.retrainer.evaluate_challenger(submitted_decision(world), challenger)
    shadowing = stored(world)
    later = shadowing.updated_at_us + 601_000_000
    why = "eta v2 declares no classes (aether.classes) for its 3 score columns"
    assert (
        world.retrainer.promoter.advance(shadowing, measured_only, later, None, not_comparable=why) == CANARY
    )
    assert stored(world).promotion_reason.startswith(f"shadow agreement not comparable: {why}")
    assert world.deployments.get("eta").canary.version == challenger


async def test_a_canary_policy_the_deployment_refuses_fails_the_promotion(world: World) -> None:
    # A policy stored before ConfigureTriggers checked it (steps descending): the deployments core refuses
    # it with INVALID_ARGUMENT, which was taken for a busy deployment, so the challenger waited
    # pending_canary for ever, its alias kept.
    configure(world, pb.PromotionPolicy(shadow_seconds=600))
    challenger = world.register(linear(TRUE_W + 0.01))
    await world.retrainer.evaluate_challenger(submitted_decision(world), challenger)
    shadowing = stored(world)
    assert shadowing.promotion_status == SHADOW
    invalid = pb.PromotionPolicy(shadow_seconds=600, canary=dpb.CanaryPolicy(steps_percent=[50.0, 10.0]))
    later = shadowing.updated_at_us + 601_000_000
    assert world.retrainer.promoter.advance(shadowing, invalid, later, 0.95) == FAILED
    failed = stored(world)
    assert "deployment 'eta' refused it: canary steps must ascend" in failed.promotion_reason
    assert world.deployments.get("eta").canary.status != dpb.CANARY_STATUS_PROGRESSING
    assert challenger_alias(world) is None


async def test_a_waiting_challenger_is_superseded_when_the_canary_becomes_champion(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    other = start_other_canary(world)
    challenger = world.register(linear(TRUE_W + 0.01))
    await world.retrainer.evaluate_challenger(submitted_decision(world), challenger)
    world.deployments.promote("eta", reason="looks fine", actor="alice")
    with caplog.at_level(logging.WARNING, logger=ALERTS):
        await world.retrainer.advance_promotions()
    failed = stored(world)
    assert failed.promotion_status == FAILED
    assert failed.promotion_reason.startswith(f"superseded: deployment 'eta' now serves eta v{other}")
    assert f"promotion of eta v{challenger} on eta failed" in caplog.text
    assert primary_version(world) == other
    assert all(v.version != challenger for v in world.deployments.get("eta").variants)


async def test_a_canary_that_ended_before_another_started_is_judged_by_the_primary(world: World) -> None:
    """The challenger's canary is promoted (or rolled back) and an operator starts another canary before
    the loop's next tick: the deployment no longer shows the challenger's canary, and the promotion waited
    for it for ever with the ``champion`` alias on the old version. What serves as primary decides."""
    challenger = world.register(linear(TRUE_W + 0.01))
    await world.retrainer.evaluate_challenger(submitted_decision(world), challenger)
    canary = world.deployments.get("eta").canary
    world.deployments.apply_decision(
        "eta", canary, Decision(Action.PROMOTE, "healthy"), actor="canary-controller"
    )
    start_other_canary(world)
    await world.retrainer.advance_promotions()
    promoted = stored(world)
    assert promoted.promotion_status == PROMOTED and "serves as the primary" in promoted.promotion_reason
    assert world.registry.get_version("eta", alias="champion").version == challenger == primary_version(world)


async def test_a_canary_rolled_back_before_another_started_is_rolled_back(world: World) -> None:
    challenger = world.register(linear(TRUE_W + 0.01))
    await world.retrainer.evaluate_challenger(submitted_decision(world), challenger)
    assert world.deployments.get("eta").canary.version == challenger
    world.deployments.rollback("eta", reason="errors", actor="canary-controller")
    start_other_canary(world)
    await world.retrainer.advance_promotions()
    rolled_back = stored(world)
    assert (
        rolled_back.promotion_status == ROLLED_BACK and "canary was replaced" in rolled_back.promotion_reason
    )
    assert world.registry.get_version("eta", alias="champion").version == world.champion
    assert primary_version(world) == world.champion


async def test_an_evaluation_whose_promotion_never_started_is_started_by_the_loop(world: World) -> None:
    """The control plane stopped after storing the evaluation (and marking its decision evaluated) and
    before the promotion's first step: the loop finds it and starts it."""
    challenger = world.register(linear(TRUE_W + 0.01))
    decision = submitted_decision(world)
    score = ModelScore({"mae": 0.1}, 1.0)
    result = EvaluationResult(True, ("mae ok",), score, score, 200, "production_feedback")
    evaluation_records.add_evaluation(
        world.sessions, "eta", decision, challenger, "mae", result, actor="retraining"
    )
    records.set_outcome(world.sessions, decision.id, "evaluated", "passed", actor="retraining")
    await world.retrainer.advance_promotions()
    assert stored(world).promotion_status == CANARY
    assert world.deployments.get("eta").canary.version == challenger
    assert world.registry.get_version("eta", alias="challenger").version == challenger


async def test_a_promotion_the_registry_refuses_fails_visibly_and_holds_up_no_other(world: World) -> None:
    """Evaluation 1 names a model version deleted since: the registry's refusal is final, so it is
    recorded; evaluation 2 is started in the same tick."""
    score = ModelScore({"mae": 0.1}, 1.0)
    result = EvaluationResult(True, ("mae ok",), score, score, 200, "production_feedback")
    first = submitted_decision(world)
    evaluation_records.add_evaluation(world.sessions, "eta", first, 99, "mae", result, actor="retraining")
    challenger = world.register(linear(TRUE_W + np.array([0.01, 0, 0, 0])))
    second = submitted_decision(world)  # one evaluation per decision
    evaluation_records.add_evaluation(
        world.sessions, "eta", second, challenger, "mae", result, actor="retraining"
    )
    await world.retrainer.advance_promotions()
    newest, broken = evaluation_records.list_evaluations(world.sessions, "eta")
    assert newest.promotion_status == CANARY
    assert broken.promotion_status == FAILED and "the registry refused it" in broken.promotion_reason
    assert "version 99" in broken.promotion_reason


async def shadowing(world: World) -> pb.Evaluation:
    """A challenger that passed its gates, in its 10-minute shadow phase (90 % agreement needed)."""
    configure(world, pb.PromotionPolicy(shadow_seconds=600, min_agreement=0.9))
    challenger = world.register(linear(TRUE_W + 0.01))
    await world.retrainer.evaluate_challenger(submitted_decision(world), challenger)
    evaluation = stored(world)
    assert evaluation.promotion_status == SHADOW
    return evaluation


def has_shadow(world: World) -> bool:
    return any(v.role == dpb.VARIANT_ROLE_SHADOW for v in world.deployments.get("eta").variants)


async def test_an_ungated_shadow_phase_says_its_agreement_was_only_measured(world: World) -> None:
    """With min_agreement 0 the phase measures and gates nothing: a challenger that disagrees with a
    champion gone wrong goes on to its canary, as it should. Its reason read "shadow agreement 0.0%" before
    "canary started", which a reader takes for a gate passed at 0 %."""
    policy = pb.PromotionPolicy(shadow_seconds=600, min_agreement=0.0)
    configure(world, policy)
    challenger = world.register(linear(TRUE_W + 0.01))
    await world.retrainer.evaluate_challenger(submitted_decision(world), challenger)
    shadowing = stored(world)
    later = shadowing.updated_at_us + 601_000_000
    assert world.retrainer.promoter.advance(shadowing, policy, later, 0.0) == CANARY
    started = stored(world)
    assert started.agreement_rate == 0.0
    assert started.promotion_reason.startswith("shadow agreement 0.0% (measured only: min_agreement is 0);")


async def test_a_shadow_that_fails_every_mirrored_call_fails_its_phase(world: World) -> None:
    evaluation = await shadowing(world)
    variant = world.retrainer.promoter.shadow_variant(evaluation)
    answer = np.array([[1.5]], dtype=np.float32).tobytes()
    for i in range(20):
        served = {
            "request_id": f"m{i}", "deployment": "eta", "variant": "eta-v1", "role": "served", "ok": "1",
            "output:y": answer, "output:y:dtype": "float32", "output:y:shape": "1,1",
        }  # fmt: skip
        failed = {
            "request_id": f"m{i}", "deployment": "eta", "variant": variant, "role": "shadow", "ok": "0",
            "error_code": "INTERNAL",
        }  # fmt: skip
        await world.client.xadd(STREAM, served)  # type: ignore[arg-type]
        await world.client.xadd(STREAM, failed)  # type: ignore[arg-type]
    await restarted(world, lambda: time.time() + 601).advance_promotions()
    failed_phase = stored(world)
    assert failed_phase.promotion_status == FAILED and failed_phase.agreement_rate == 0.0
    assert failed_phase.promotion_reason == "shadow agreement 0.0% below 90.0%"
    assert not has_shadow(world)  # no more traffic mirrored to the broken model
    assert world.deployments.get("eta").canary.status == dpb.CANARY_STATUS_UNSPECIFIED


async def test_a_shadow_phase_with_nothing_to_compare_fails_once_over(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    evaluation = await shadowing(world)  # and no mirrored request reaches the deployment
    await restarted(world, lambda: time.time() + 300).advance_promotions()
    assert stored(world).promotion_status == SHADOW and has_shadow(world)  # the phase still runs
    with caplog.at_level(logging.WARNING, logger=ALERTS):
        await restarted(world, lambda: time.time() + 601).advance_promotions()
    failed_phase = stored(world)
    assert failed_phase.promotion_status == FAILED
    assert "over with nothing to compare" in failed_phase.promotion_reason
    assert not has_shadow(world)
    assert f"promotion of eta v{evaluation.challenger_version} on eta failed" in caplog.text


def canary_started_then_killed(world: World) -> int:
    """What a kill -9 of the control plane leaves between the deployments core starting the challenger's
    canary and the promotion recording its ``canary`` phase: still ``pending_canary``, the canary running."""
    challenger = world.register(linear(TRUE_W + 0.01), approve=True)
    score = ModelScore({"mae": 0.1}, 1.0)
    result = EvaluationResult(True, ("mae ok",), score, score, 200, "production_feedback")
    evaluation = evaluation_records.add_evaluation(
        world.sessions, "eta", submitted_decision(world), challenger, "mae", result, actor="retraining"
    )
    evaluation_records.set_promotion(
        world.sessions, evaluation.id, PENDING_CANARY, "approved; handing it over", actor="retraining"
    )
    world.deployments.start_canary(
        dpb.StartCanaryRequest(name="eta", model_name="eta", version=challenger), actor="retraining"
    )
    return challenger


@pytest.mark.parametrize(("action", "outcome"), [(Action.PROMOTE, PROMOTED), (Action.ROLLBACK, ROLLED_BACK)])
async def test_a_canary_that_ended_while_its_start_was_unrecorded_ends_the_promotion(
    world: World, action: Action, outcome: str
) -> None:
    """The canary controller finished the canary while the control plane was down: promoted, it was
    taken for a superseded champion (``failed``, alias ``champion`` left on the old version); rolled back,
    a second canary of the challenger was started."""
    challenger = canary_started_then_killed(world)
    canary = world.deployments.get("eta").canary
    world.deployments.apply_decision("eta", canary, Decision(action, "verdict"), actor="canary-controller")
    await world.retrainer.advance_promotions()
    ended = stored(world)
    assert ended.promotion_status == outcome, ended.promotion_reason
    assert "started before the control plane stopped" in ended.promotion_reason
    champion = challenger if action is Action.PROMOTE else world.champion
    assert world.registry.get_version("eta", alias="champion").version == champion == primary_version(world)
    assert world.deployments.get("eta").canary.status != dpb.CANARY_STATUS_PROGRESSING  # none started again


async def test_a_promotion_whose_deployment_was_deleted_fails(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Left ``canary``, it was logged as NOT_FOUND every tick and never ended, with no alert."""
    challenger = world.register(linear(TRUE_W + 0.01))
    await world.retrainer.evaluate_challenger(submitted_decision(world), challenger)
    assert stored(world).promotion_status == CANARY
    world.deployments.delete("eta", actor="operator")
    with caplog.at_level(logging.WARNING, logger=ALERTS):
        await world.retrainer.advance_promotions()
    failed = stored(world)
    assert (failed.promotion_status, failed.promotion_reason) == (FAILED, "deployment 'eta' was deleted")
    assert f"promotion of eta v{challenger} on eta failed" in caplog.text
    assert world.registry.get_version("eta", alias="champion").version == world.champion


async def test_a_challenger_under_promotion_cannot_be_deleted_and_one_deleted_before_fails_it(
    world: World,
) -> None:
    """Deleting the challenger of a promotion awaiting approval was allowed (nothing deployed it), and the
    promotion never ended: every tick logged the version's NOT_FOUND. The registry now refuses the delete
    while a promotion is in progress, naming it; a version deleted before that rule (by a control plane
    without it: a registry here without the guard) fails the promotion rather than wedging it."""
    configure(world, pb.PromotionPolicy(manual_approval=True))
    challenger = world.register(linear(TRUE_W + 0.01))
    await world.retrainer.evaluate_challenger(submitted_decision(world), challenger)
    evaluation = stored(world)
    assert evaluation.promotion_status == AWAITING_APPROVAL
    with pytest.raises(FailedPrecondition, match=rf"retraining promotion 'evaluation {evaluation.id}'"):
        world.registry.delete_version("eta", challenger, actor="release-manager")
    with read_session(world.sessions) as session:  # the users a version's lineage lists
        users = world.registry.users_of(session, "eta", challenger)
    assert [user.kind for user in users] == ["retraining promotion"]

    unguarded = ModelRegistry(world.sessions, world.registry.artifacts)  # no guards: an older version
    unguarded.delete_version("eta", challenger, actor="release-manager")
    await world.retrainer.advance_promotions()
    failed = stored(world)
    assert failed.promotion_status == FAILED and f"has no version {challenger}" in failed.promotion_reason


def challenger_alias(world: World) -> int | None:
    return dict(world.registry.get_model("eta").aliases).get("challenger")


def alias_removals(world: World) -> list[tuple[str, object]]:
    """The audited removals of the ``challenger`` alias: (actor, the version it named)."""
    with read_session(world.sessions) as session:
        rows = session.execute(
            select(AuditEntryRow.actor, AuditEntryRow.before).where(
                AuditEntryRow.object_id == "eta@challenger", AuditEntryRow.action == "delete"
            )
        ).all()
    return [(actor, before["version"]) for actor, before in rows]


@pytest.mark.parametrize(("action", "outcome"), [(Action.ROLLBACK, ROLLED_BACK), (Action.PROMOTE, PROMOTED)])
async def test_the_challenger_alias_goes_when_its_canary_ends(
    world: World, action: Action, outcome: str
) -> None:
    """The ``challenger`` alias names the version whose promotion is in progress. Left on a rolled-back
    version, a user reading the aliases saw a challenger that would never be promoted; on a promoted one,
    a challenger that is the champion. The removal is audited; the records keep the history."""
    challenger = world.register(linear(TRUE_W + 0.01))
    await world.retrainer.evaluate_challenger(submitted_decision(world), challenger)
    assert stored(world).promotion_status == CANARY and challenger_alias(world) == challenger
    canary = world.deployments.get("eta").canary
    world.deployments.apply_decision("eta", canary, Decision(action, "verdict"), actor="canary-controller")
    await world.retrainer.advance_promotions()
    ended = stored(world)
    assert ended.promotion_status == outcome and ended.challenger_version == challenger
    assert challenger_alias(world) is None
    assert alias_removals(world) == [("retraining", challenger)]
    champion = challenger if action is Action.PROMOTE else world.champion
    assert world.registry.get_version("eta", alias="champion").version == champion


async def test_the_challenger_alias_goes_when_a_reviewer_rejects_or_the_shadow_phase_fails(
    world: World,
) -> None:
    configure(world, pb.PromotionPolicy(manual_approval=True))
    rejected = world.register(linear(TRUE_W + 0.01))
    await world.retrainer.evaluate_challenger(submitted_decision(world), rejected)
    assert challenger_alias(world) == rejected
    world.registry.review("eta", rejected, mpb.REJECTED, "not now", actor="reviewer")
    await world.retrainer.advance_promotions()
    assert stored(world).promotion_status == "rejected" and challenger_alias(world) is None

    evaluation = await shadowing(world)  # a second challenger, in a shadow phase nothing reaches
    assert challenger_alias(world) == evaluation.challenger_version
    await restarted(world, lambda: time.time() + 601).advance_promotions()
    assert stored(world).promotion_status == FAILED and challenger_alias(world) is None
    assert alias_removals(world) == [("retraining", rejected), ("retraining", evaluation.challenger_version)]


async def test_an_ending_promotion_leaves_the_alias_a_later_challenger_took(world: World) -> None:
    challenger = world.register(linear(TRUE_W + 0.01))
    await world.retrainer.evaluate_challenger(submitted_decision(world), challenger)
    later = world.register(linear(TRUE_W + 0.02))
    world.registry.set_alias("eta", "challenger", later, actor="alice")
    world.deployments.rollback("eta", reason="errors", actor="canary-controller")
    await world.retrainer.advance_promotions()
    assert stored(world).promotion_status == ROLLED_BACK
    assert challenger_alias(world) == later and alias_removals(world) == []


def job_ran(world: World, job_id: str, weights: npt.NDArray[np.float64]) -> int:
    """Retraining job ``job_id`` succeeded and registered a model of ``weights`` from its run, as the
    supervisor records it; returns the version."""
    tracking = TrackingStore(world.sessions)
    experiment = tracking.create_experiment(f"retrain-{job_id}", actor="supervisor")
    run = tracking.create_run(experiment.experiment_id, "retrain", {}, {}, actor="supervisor")
    with write_session(world.sessions) as session:
        session.execute(
            update(JobRow).where(JobRow.job_id == job_id).values(state="SUCCEEDED", run_id=run.run_id)
        )
    return world.register(linear(weights), run_id=run.run_id)


async def test_no_retraining_triggers_while_a_promotion_is_in_progress(world: World) -> None:
    """With manual approval, a retraining triggered while the previous challenger waited for its reviewer
    (the running-job guard looked at submitted jobs only): its challenger took the ``challenger`` alias, and
    once the reviewer approved the first, that one entered the canary while the alias named the other, so a
    reviewer going by the alias judged the wrong version. Now the deployment's triggers are held, with the
    reason in their decisions, until the promotion ends; then a trigger retrains again."""
    spec = jpb.JobSpec(name="eta-train", entrypoint=jpb.Entrypoint(module="json"))
    champion = deploy_trained_champion(world, spec, TRUE_W + np.array([0.3, -0.3, 0.3, -0.3]))
    configure(world, pb.PromotionPolicy(manual_approval=True))
    submitted = await world.retrainer.trigger_now("eta", "alice", "new data")
    assert submitted.outcome == "submitted"
    first = job_ran(world, submitted.job_id, TRUE_W + 0.01)
    await world.retrainer.tick()  # follows the job up: evaluated, passed, waiting for a reviewer
    assert stored(world).promotion_status == AWAITING_APPROVAL and challenger_alias(world) == first

    jobs = len(world.jobs.list()[0])
    held = await world.retrainer.trigger_now("eta", "bob", "newer data")
    waiting = still_promoting(f"eta v{first} ({AWAITING_APPROVAL})")
    assert (held.outcome, held.triggered, list(held.reasons)) == ("not_triggered", False, [waiting])
    ticked = [d for d in await world.retrainer.tick() if d.deployment == "eta"]
    assert [list(d.reasons) for d in ticked] == [[waiting]] and not ticked[0].triggered
    assert len(world.jobs.list()[0]) == jobs and challenger_alias(world) == first

    world.registry.review("eta", first, mpb.APPROVED, "ok", actor="reviewer")
    await world.retrainer.advance_promotions()
    canary = world.deployments.get("eta").canary
    assert stored(world).promotion_status == CANARY
    assert canary.status == dpb.CANARY_STATUS_PROGRESSING and canary.version == first
    assert challenger_alias(world) == first  # the alias names the version in the canary
    during = await world.retrainer.trigger_now("eta", "bob", "newer data")
    assert list(during.reasons) == [still_promoting(f"eta v{first} ({CANARY})")]

    world.deployments.apply_decision("eta", canary, Decision(Action.PROMOTE, "healthy"), actor="canary")
    await world.retrainer.advance_promotions()
    assert stored(world).promotion_status == PROMOTED and primary_version(world) == first != champion
    again = await world.retrainer.trigger_now("eta", "bob", "newer data")
    assert again.triggered and again.outcome == "submitted" and again.job_id != submitted.job_id
    assert len(world.jobs.list()[0]) == jobs + 1


async def test_a_challenger_a_reviewer_already_decided_is_promoted_or_rejected_as_they_decided(
    world: World,
) -> None:
    """The registry refuses a review of a decided version that is not an exact repeat of its decision, so
    the promotion's own approval (or rejection) of a version a reviewer already approved (rejected) is
    refused; the decision it wanted is there all the same, so the promotion goes on as if it had made it,
    and the reviewer's decision stays recorded."""
    score = ModelScore({"mae": 0.1}, 1.0)
    passed = EvaluationResult(True, ("mae ok",), score, score, 200, "production_feedback")
    approved = world.register(linear(TRUE_W + 0.01), approve=True)  # by "reviewer", "first model"
    evaluation_records.add_evaluation(
        world.sessions, "eta", submitted_decision(world), approved, "mae", passed, actor="retraining"
    )
    await world.retrainer.advance_promotions()
    assert stored(world).promotion_status == CANARY
    assert world.deployments.get("eta").canary.version == approved
    kept = world.registry.get_version("eta", approved).approval
    assert (kept.actor, kept.reason) == ("reviewer", "first model")

    failed = EvaluationResult(False, ("mae worse",), score, score, 200, "production_feedback")
    rejected = world.register(linear(TRUE_W + 0.02))
    world.registry.review("eta", rejected, mpb.REJECTED, "not this one", actor="reviewer")
    evaluation_records.add_evaluation(
        world.sessions, "eta", submitted_decision(world), rejected, "mae", failed, actor="retraining"
    )
    await world.retrainer.advance_promotions()
    newest = evaluation_records.list_evaluations(world.sessions, "eta")[0]
    assert newest.challenger_version == rejected
    assert newest.promotion_status == "rejected" and "refused" not in newest.promotion_reason
