"""The retraining loop across restarts (the schedule rule's window starts at the last tick stored before
the restart, so a cron minute in the first window after it, or during the downtime, still fires, once),
and each deployment and submitted decision handled on its own (one that fails stops no other)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

import pytest

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import jobs_pb2 as jpb
from clients.aether.v1 import model_registry_pb2 as mpb
from clients.aether.v1 import monitoring_pb2 as monpb
from clients.aether.v1 import retraining_pb2 as pb
from clients.errors import FailedPrecondition
from control_plane.deployments.canary import Action, Decision
from control_plane.deployments.core import DeploymentManager
from control_plane.monitoring import config as monitor_configs
from control_plane.retraining import config as configs
from control_plane.retraining import evaluation_records, records
from control_plane.retraining.loop import Retrainer, RetrainingSettings
from tests.integration.retraining.conftest import STREAM, TRUE_W, World, restarted
from tests.integration.retraining.test_closed_loop import deploy_trained_champion, submitted_decision
from tests.unit.retraining.models import linear


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def at(day: int, hour: int, minute: int, second: int = 0) -> float:
    return dt.datetime(2026, 5, day, hour, minute, second, tzinfo=dt.UTC).timestamp()


async def triggered_at(retrainer: Retrainer, clock: Clock, moment: float) -> list[str]:
    """The rules that fired at ``moment`` for deployment eta (empty: no retraining)."""
    clock.now = moment
    decisions = await retrainer.tick()
    return [rule for d in decisions if d.deployment == "eta" and d.triggered for rule in d.rules]


def schedule(world: World, expression: str) -> None:
    configs.put_config(
        world.sessions,
        pb.TriggerConfig(deployment="eta", enabled=True, schedule=expression, cooldown_seconds=0),
        actor="operator",
    )


async def test_a_restart_does_not_skip_the_cron_minute_of_its_first_window(world: World) -> None:
    schedule(world, "0 2 * * *")
    clock = Clock()
    assert await triggered_at(restarted(world, clock), clock, at(1, 1, 59, 30)) == []
    after_restart = restarted(world, clock)
    assert await triggered_at(after_restart, clock, at(1, 2, 0, 10)) == ["schedule"]
    assert await triggered_at(after_restart, clock, at(1, 2, 0, 40)) == []


async def test_cron_minutes_missed_while_down_fire_once(world: World) -> None:
    schedule(world, "*/10 * * * *")
    clock = Clock()
    before = restarted(world, clock)
    assert await triggered_at(before, clock, at(2, 1, 0, 30)) == []
    assert await triggered_at(before, clock, at(2, 1, 1, 0)) == []
    # Three hours down: eighteen matching minutes passed, and the first tick back retrains once for all.
    after_restart = restarted(world, clock)
    assert await triggered_at(after_restart, clock, at(2, 4, 5, 0)) == ["schedule"]
    assert await triggered_at(after_restart, clock, at(2, 4, 5, 30)) == []
    assert await triggered_at(after_restart, clock, at(2, 4, 10, 0)) == ["schedule"]


async def test_a_schedule_as_long_as_its_cooldown_fires_at_every_cron_minute(world: World) -> None:
    """An hourly schedule with the default one-hour cooldown: a tick lands some seconds into the cron
    minute, so the next hour's tick came a few seconds short of the cooldown (or not) and the schedule
    skipped every other hour by chance. Its cooldown now counts from the last trigger's minute."""
    configs.put_config(
        world.sessions,
        pb.TriggerConfig(deployment="eta", enabled=True, schedule="0 * * * *", cooldown_seconds=3600),
        actor="operator",
    )
    clock = Clock()
    retrainer = restarted(world, clock)
    assert await triggered_at(retrainer, clock, at(5, 11, 59, 40)) == []
    assert await triggered_at(retrainer, clock, at(5, 12, 0, 15)) == ["schedule"]
    assert await triggered_at(retrainer, clock, at(5, 12, 0, 45)) == []
    assert await triggered_at(retrainer, clock, at(5, 13, 0, 10)) == ["schedule"]
    assert await triggered_at(retrainer, clock, at(5, 13, 0, 40)) == []


async def test_the_promoted_champion_is_not_retrained_for_the_windows_of_the_model_it_replaced(
    world: World,
) -> None:
    """A degraded model retrained two hours ago; its challenger went through the canary and was promoted
    just now. The quality windows of the last hour (all predictions of the replaced model, degraded) had
    ended after that trigger, so the first tick after the promotion retrained the new champion at once,
    for the cause its own retraining answered."""
    configs.put_config(
        world.sessions,
        pb.TriggerConfig(
            deployment="eta",
            enabled=True,
            performance_threshold=1.0,
            cooldown_seconds=60,
            gates=pb.EvaluationGates(metric="mae", max_latency_ratio=-1),
            min_rows=3,
        ),
        actor="operator",
    )
    now = time.time()
    clock = Clock()
    clock.now = now
    retrainer = restarted(world, clock)
    two_hours_ago = int((now - 7200) * 1e6)
    draft = records.Draft("eta", two_hours_ago, True, ("performance",), "retraining", "eta", world.champion)
    records.add_decision(world.sessions, draft, ["mae above threshold"], records.SUBMITTED)
    challenger = world.register(linear(TRUE_W + 0.01))
    decision = records.submitted(world.sessions, "eta")[-1]
    assert (await retrainer.evaluate_challenger(decision, challenger)).passed
    canary = world.deployments.get("eta").canary
    world.deployments.apply_decision("eta", canary, Decision(Action.PROMOTE, "healthy"), actor="canary")
    await retrainer.advance_promotions()
    assert world.registry.get_version("eta", alias="champion").version == challenger
    clock.now = now + 30
    assert await triggered_at(retrainer, clock, now + 30) == []


async def test_a_plane_whose_clock_is_behind_the_last_trigger_still_decides(world: World) -> None:
    """Two control planes on one database, one's clock 10 s behind the other's: right after the other
    retrained, its last trigger lay in this plane's future, reading the monitor's windows "since" it
    raised INVALID_ARGUMENT (since_us must be before until_us), so each tick decided nothing for the
    deployment and a person's TriggerNow got that error back."""
    now = time.time()
    ahead, behind = Clock(), Clock()
    ahead.now, behind.now = now, now - 10
    plane_a, plane_b = restarted(world, ahead), restarted(world, behind)
    assert (await plane_a.trigger_now("eta", "alice")).triggered
    decisions = await plane_b.tick()
    assert [d.deployment for d in decisions] == ["eta"] and not decisions[0].triggered
    again = await plane_b.trigger_now("eta", "bob", "new data")
    assert again.triggered and list(again.rules) == ["manual"]


async def test_two_control_planes_ticking_together_block_a_trigger_once(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Two control planes on one database tick at once for the same cron minute, whose retraining is
    blocked (no training job to resubmit): each passed the cooldown before the other stored its decision,
    and the deployment got two blocked decisions and two alerts for one cause."""
    configs.put_config(
        world.sessions,
        pb.TriggerConfig(deployment="eta", enabled=True, schedule="0 2 * * *", cooldown_seconds=3600),
        actor="operator",
    )
    clock = Clock()
    one, other = restarted(world, clock), restarted(world, clock)
    assert await triggered_at(one, clock, at(6, 1, 59, 30)) == []
    clock.now = at(6, 2, 0, 10)
    answers = await asyncio.gather(one.tick(), other.tick())
    triggered = [d for decisions in answers for d in decisions if d.triggered]
    assert [d.outcome for d in triggered] == ["blocked_no_spec"]
    stored = records.list_decisions(world.sessions, "eta", triggered_only=True)
    assert [d.outcome for d in stored] == ["blocked_no_spec"]
    # The other tick's refusal says which check caught it: the store's, when both steps passed the
    # cooldown before either stored (the race), or the cooldown, when the host ran one tick's step after
    # the other had stored (a loaded CI host did). Either way one decision and one alert.
    refused = [d for decisions in answers for d in decisions if not d.triggered]
    assert len(refused) == 1 and len(refused[0].reasons) == 1, refused
    assert refused[0].reasons[0] == records.TRIGGERED_MEANWHILE or refused[0].reasons[0].startswith(
        "cooldown of 3600 s"
    ), refused
    alerts = [r for r in caplog.records if "retraining of eta blocked" in r.getMessage()]
    assert len(alerts) == 1


def test_a_trigger_whose_step_saw_an_older_last_trigger_is_stored_as_triggered_meanwhile(
    world: World,
) -> None:
    """The race itself, without relying on two ticks interleaving: two automatic triggers whose steps both
    saw the same last trigger; the second to be stored finds the first and is stored not triggered."""
    first = records.Draft(
        "eta", int(at(6, 2, 0, 10) * 1e6), True, ("schedule",), "retrainer", seen_last_triggered_us=0
    )
    second = records.Draft(
        "eta", int(at(6, 2, 0, 11) * 1e6), True, ("schedule",), "retrainer", seen_last_triggered_us=0
    )
    stored = records.add_decision(world.sessions, first, ["schedule 0 2 * * *"], "blocked_no_spec")
    assert stored.triggered
    refused = records.add_decision(world.sessions, second, ["schedule 0 2 * * *"], "blocked_no_spec")
    assert (refused.triggered, list(refused.reasons)) == (False, [records.TRIGGERED_MEANWHILE])
    assert [d.outcome for d in records.list_decisions(world.sessions, "eta", triggered_only=True)] == [
        "blocked_no_spec"
    ]


class DeploymentsFailingFor(DeploymentManager):
    """FAULT: reading one deployment fails (say its rows cannot be read), which no API call causes."""

    def __init__(self, world: World, failing: str) -> None:
        super().__init__(world.sessions, world.registry)
        self.failing = failing

    def get(self, name: str) -> dpb.Deployment:
        if name == self.failing:
            raise RuntimeError(f"cannot read deployment {name!r}")
        return super().get(name)


async def test_a_deployment_that_fails_does_not_stop_the_others(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # Enabled for a deployment (sorted before eta) that every tick fails for.
    variants = list(world.deployments.get("eta").variants)
    world.deployments.create(dpb.CreateDeploymentRequest(name="a-fails", variants=variants), actor="operator")
    monitor = monpb.MonitorConfig(deployment="a-fails", task=monpb.TASK_TYPE_REGRESSION)
    monitor_configs.put_config(world.sessions, monitor, actor="operator")
    configs.put_config(world.sessions, pb.TriggerConfig(deployment="a-fails", enabled=True), actor="operator")
    retrainer = Retrainer(
        world.sessions,
        world.registry,
        DeploymentsFailingFor(world, "a-fails"),
        world.jobs,
        world.features,
        world.offline,
        world.client,
        RetrainingSettings(stream=STREAM),
    )
    decisions = await retrainer.tick()
    assert [d.deployment for d in decisions] == ["eta"]
    assert "retraining decision for deployment 'a-fails' failed" in caplog.text


async def test_an_enabled_config_of_a_deleted_deployment_is_passed_by_with_one_warning(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Deleting a deployment keeps its trigger config, as it keeps its monitor config: each tick logged an
    ERROR with a NotFound traceback for it. It is passed by now, with one warning per deletion, and it
    applies again to a deployment created under the name."""
    variants = list(world.deployments.get("eta").variants)
    world.deployments.delete("eta", actor="operator")
    with caplog.at_level(logging.INFO, logger="aether.control_plane.retraining"):
        assert await world.retrainer.tick() == []
        assert await world.retrainer.tick() == []
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            "deployment 'eta' has enabled retraining triggers but no longer exists: no retraining for it "
            "until a deployment of that name is created again (or its triggers are disabled)",
        )
    ]
    assert configs.get_config(world.sessions, "eta").enabled
    assert records.list_decisions(world.sessions, "eta") == []

    world.deployments.create(dpb.CreateDeploymentRequest(name="eta", variants=variants), actor="operator")
    assert [d.deployment for d in await world.retrainer.tick()] == ["eta"]
    world.deployments.delete("eta", actor="operator")
    caplog.clear()
    assert await world.retrainer.tick() == []
    assert [r.levelname for r in caplog.records] == ["WARNING"]  # deleted again: said again


async def test_a_challenger_whose_monitor_lost_its_task_is_not_rejected(world: World) -> None:
    # The task cleared after the job was submitted: the gates can compute no metric, and the challenger
    # was Rejected in the registry for good ("challenger mae is undefined on the holdout").
    monitor_configs.put_config(world.sessions, monpb.MonitorConfig(deployment="eta"), actor="operator")
    challenger = world.register(linear(TRUE_W))
    with pytest.raises(
        FailedPrecondition, match="cannot be evaluated: the monitor of deployment 'eta' has no"
    ):
        await world.retrainer.evaluate_challenger(submitted_decision(world), challenger)
    assert evaluation_records.list_evaluations(world.sessions, "eta") == []
    assert world.registry.get_version("eta", challenger).approval.status != mpb.REJECTED


async def test_a_decision_whose_job_is_gone_ends_and_stops_no_other(world: World) -> None:
    """A job row deleted under its decision: jobs.get is NOT_FOUND every tick, so the decision gets a final
    outcome with the reason (left submitted, it blocked the deployment's retraining for good)."""
    lost = submitted_decision(world, "no-such-job")
    job = world.jobs.submit(
        jpb.JobSpec(name="retrain-broken", entrypoint=jpb.Entrypoint(module="no_such_trainer_module")),
        actor="retraining",
    )
    assert job.state == jpb.JOB_STATE_FAILED
    submitted_decision(world, job.job_id)
    await world.retrainer.follow_up()
    assert records.submitted(world.sessions, "eta") == []
    outcomes = {d.id: d for d in records.list_decisions(world.sessions, "eta")}
    assert [d.outcome for d in outcomes.values()] == ["job_failed", "job_failed"]
    assert "job 'no-such-job' is gone" in outcomes[lost.id].reasons[-1]


def retraining_jobs(world: World) -> list[str]:
    return [j.job_id for j in world.jobs.list()[0] if "-retrain-" in j.spec.name]


async def test_two_control_planes_triggered_together_submit_one_job(world: World) -> None:
    """Two control planes on one database (a TriggerNow retried through a load balancer): each passed
    the running-job guard before the other stored its decision, and both submitted a job."""
    deploy_trained_champion(world, jpb.JobSpec(name="eta-train", entrypoint=jpb.Entrypoint(module="json")))
    one, other = restarted(world, time.time), restarted(world, time.time)
    answers = await asyncio.gather(one.trigger_now("eta", "alice"), other.trigger_now("eta", "alice"))
    assert sorted(a.outcome for a in answers) == ["not_triggered", "submitted"]
    refused = next(a for a in answers if a.outcome == "not_triggered")
    assert not refused.triggered and refused.reasons == [
        "a retraining job of this deployment is still running"
    ]
    assert retraining_jobs(world) == [next(a.job_id for a in answers if a.outcome == "submitted")]


async def test_a_decision_another_plane_is_submitting_is_not_ended_under_it(world: World) -> None:
    """A decision just stored ``submitting`` by another control plane, its job not yet submitted: ended
    ``submit_failed`` here, this plane retrained too, and the other's job followed. Once the grace is
    over, a decision with no job is taken for an interrupted one, as before."""
    deploy_trained_champion(world, jpb.JobSpec(name="eta-train", entrypoint=jpb.Entrypoint(module="json")))
    draft = records.Draft("eta", records.now_us(), True, ("manual",), "bob", "eta", world.champion)
    in_flight = records.add_decision(world.sessions, draft, ["manual trigger by bob"], records.SUBMITTING)
    answer = await world.retrainer.trigger_now("eta", "alice")
    assert answer.outcome == "not_triggered" and retraining_jobs(world) == []
    assert [d.id for d in records.submitted(world.sessions, "eta", (records.SUBMITTING,))] == [in_flight.id]

    later = restarted(world, lambda: time.time() + 121)
    assert (await later.trigger_now("eta", "alice")).outcome == "submitted"
    ended = next(d for d in records.list_decisions(world.sessions, "eta") if d.id == in_flight.id)
    assert ended.outcome == "submit_failed" and len(retraining_jobs(world)) == 1


async def test_the_submit_grace_runs_from_when_the_decision_was_stored(world: World) -> None:
    """Another plane's step decided 200 s ago (a slow data-window check) and has only just stored its
    decision ``submitting``: the grace ran from the step's start, so this plane took the decision for an
    interrupted one at once, ended it ``submit_failed`` and retrained too. It runs from the row's write."""
    deploy_trained_champion(world, jpb.JobSpec(name="eta-train", entrypoint=jpb.Entrypoint(module="json")))
    decided = records.now_us() - 200_000_000
    draft = records.Draft("eta", decided, True, ("manual",), "bob", "eta", world.champion)
    in_flight = records.add_decision(world.sessions, draft, ["manual trigger by bob"], records.SUBMITTING)
    answer = await world.retrainer.trigger_now("eta", "alice")
    assert answer.outcome == "not_triggered" and retraining_jobs(world) == []
    assert [d.id for d in records.submitted(world.sessions, "eta", (records.SUBMITTING,))] == [in_flight.id]

    later = restarted(world, lambda: time.time() + 121)  # the grace, counted from the write, is over
    assert (await later.trigger_now("eta", "alice")).outcome == "submitted"
    ended = next(d for d in records.list_decisions(world.sessions, "eta") if d.id == in_flight.id)
    assert ended.outcome == "submit_failed" and len(retraining_jobs(world)) == 1
