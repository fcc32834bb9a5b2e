"""The closed loop on real cores: a better challenger is evaluated on the labelled production holdout,
approved and promoted through a canary to champion; a worse one is rejected with the champion untouched;
a failed retraining job and an invalid data window leave the champion serving, with alerts."""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy.exc
from sqlalchemy import event, select, text, update
from sqlalchemy.orm import Session

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import feature_registry_pb2 as fpb
from clients.aether.v1 import jobs_pb2 as jpb
from clients.aether.v1 import model_registry_pb2 as mpb
from clients.aether.v1 import retraining_pb2 as pb
from clients.aether.v1 import tracking_pb2 as tpb
from clients.aether.v1 import types_pb2
from control_plane.audit.tables import AuditEntryRow
from control_plane.db import create_db_engine, create_session_factory, read_session, write_session
from control_plane.deployments.canary import Action, Decision
from control_plane.jobs.tables import JobRow
from control_plane.offline.datasets import record_dataset
from control_plane.retraining import config as configs
from control_plane.retraining import evaluation_records, records
from control_plane.retraining.promotion import CANARY, PROMOTED, REJECTED
from control_plane.retraining.tables import RetrainingDecisionRow, RetrainingEvaluationRow
from control_plane.tracking.store import TrackingStore
from tests.integration.retraining.conftest import HOLDOUT_ROWS, TRUE_W, World, restarted
from tests.unit.retraining.models import linear


def submitted_decision(world: World, job_id: str = "") -> RetrainingDecisionRow:
    draft = records.Draft("eta", records.now_us(), True, ("manual",), "tester", "eta", world.champion)
    records.add_decision(world.sessions, draft, ["asked by a test"], records.SUBMITTED, job_id)
    return records.submitted(world.sessions, "eta")[-1]


def succeeded_retraining_job(world: World) -> tuple[jpb.Job, tpb.Run]:
    """A retraining job and its tracking run, recorded as the supervisor records a job that ran."""
    job = world.jobs.submit(jpb.JobSpec(name="retrain", entrypoint=jpb.Entrypoint(module="json")), actor="r")
    tracking = TrackingStore(world.sessions)
    experiment = tracking.create_experiment("retrain", actor="supervisor")
    run = tracking.create_run(experiment.experiment_id, "retrain", {}, {}, actor="supervisor")
    with write_session(world.sessions) as session:
        session.execute(
            update(JobRow).where(JobRow.job_id == job.job_id).values(state="SUCCEEDED", run_id=run.run_id)
        )
    return job, run


def primary_version(world: World) -> int:
    deployment = world.deployments.get("eta")
    return next(int(v.version) for v in deployment.variants if v.role == dpb.VARIANT_ROLE_PRIMARY)


def deploy_trained_champion(
    world: World, spec: jpb.JobSpec, weights: npt.NDArray[np.float64] = TRUE_W
) -> int:
    """Serves "eta" with a champion (of ``weights``) trained by a job of ``spec``, as the supervisor
    records it: the job, its run tagged with the job id, and the version registered from that run;
    returns that version."""
    job = world.jobs.submit(spec, actor="trainer")
    tracking = TrackingStore(world.sessions)
    experiment = tracking.create_experiment("eta-train", actor="supervisor")
    run = tracking.create_run(
        experiment.experiment_id, "eta-train", {}, {"aether.job_id": job.job_id}, actor="supervisor"
    )
    trained = world.register(linear(weights), approve=True, run_id=run.run_id)
    world.deployments.update(
        dpb.UpdateDeploymentRequest(
            name="eta",
            replace_variants=True,
            variants=[dpb.Variant(model_name="eta", version=trained, role=dpb.VARIANT_ROLE_PRIMARY)],
        ),
        actor="operator",
    )
    return trained


def audit_actions(world: World) -> list[str]:
    with read_session(world.sessions) as session:
        return list(session.execute(select(AuditEntryRow.action).order_by(AuditEntryRow.seq)).scalars())


async def test_better_challenger_is_promoted_through_the_canary(world: World) -> None:
    challenger = world.register(linear(TRUE_W + 0.01))
    evaluation = await world.retrainer.evaluate_challenger(submitted_decision(world), challenger)
    assert evaluation.passed, evaluation.reasons
    assert evaluation.holdout_rows == HOLDOUT_ROWS and evaluation.holdout_source == "production_feedback"
    assert evaluation.challenger_metrics["mae"] < evaluation.champion_metrics["mae"]
    version = world.registry.get_version("eta", challenger)
    assert version.approval.status == mpb.APPROVED
    assert world.registry.get_version("eta", alias="challenger").version == challenger
    deployment = world.deployments.get("eta")
    assert (
        deployment.canary.status == dpb.CANARY_STATUS_PROGRESSING and deployment.canary.version == challenger
    )
    assert [e.promotion_status for e in evaluation_records.list_evaluations(world.sessions, "eta")] == [
        CANARY
    ]

    # The canary controller's verdict, applied through the deployments core as the controller does.
    world.deployments.apply_decision(
        "eta", deployment.canary, Decision(Action.PROMOTE, "healthy"), actor="canary-controller"
    )
    await world.retrainer.advance_promotions()
    assert world.registry.get_version("eta", alias="champion").version == challenger
    assert primary_version(world) == challenger
    assert evaluation_records.list_evaluations(world.sessions, "eta")[0].promotion_status == PROMOTED
    actions = audit_actions(world)
    for step in (
        "retrain_decision",
        "evaluate",
        "approve",
        "start_canary",
        "promotion_canary",
        "promotion_promoted",
    ):
        assert step in actions, step


async def test_worse_challenger_fails_and_the_champion_is_untouched(world: World) -> None:
    challenger = world.register(linear(TRUE_W + np.array([1.5, 1.5, -1.5, 1.5])))
    before = world.deployments.get("eta")
    evaluation = await world.retrainer.evaluate_challenger(submitted_decision(world), challenger)
    assert not evaluation.passed and evaluation.reasons[0].startswith("mae: challenger")
    assert world.registry.get_version("eta", challenger).approval.status == mpb.REJECTED
    assert world.registry.get_version("eta", alias="champion").version == world.champion
    after = world.deployments.get("eta")
    assert after.plan_revision == before.plan_revision and primary_version(world) == world.champion
    stored = evaluation_records.list_evaluations(world.sessions, "eta")[0]
    assert stored.promotion_status == REJECTED and "failed gates" in stored.promotion_reason
    decision = records.list_decisions(world.sessions, "eta")[0]
    assert decision.outcome == "evaluated" and "failed the gates" in decision.reasons[-1]


async def test_failed_retraining_job_leaves_the_champion_serving(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    spec = jpb.JobSpec(name="retrain-broken", entrypoint=jpb.Entrypoint(module="no_such_trainer_module"))
    job = world.jobs.submit(spec, actor="retraining")
    assert job.state == jpb.JOB_STATE_FAILED
    before = world.deployments.get("eta")
    submitted_decision(world, job.job_id)
    with caplog.at_level(logging.WARNING, logger="aether.control_plane.monitoring"):
        await world.retrainer.follow_up()
    decision = records.list_decisions(world.sessions, "eta")[0]
    assert decision.outcome == "job_failed" and "champion keeps serving" in decision.reasons[-1]
    assert world.deployments.get("eta").plan_revision == before.plan_revision
    assert primary_version(world) == world.champion
    assert "retraining of eta failed" in caplog.text
    assert records.submitted(world.sessions, "eta") == []


async def test_a_challenger_that_cannot_be_evaluated_ends_its_decision(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The job succeeded, but ONNX Runtime refuses the holdout for its model (one input wider): the
    evaluation fails the same way every tick. Left ``submitted``, the decision was retried for ever and
    refused every later trigger, a person's TriggerNow included, as "still running"."""
    job, run = succeeded_retraining_job(world)
    challenger = world.register(linear(np.r_[TRUE_W, 0.1]), run_id=run.run_id)
    decision = submitted_decision(world, job.job_id)
    with caplog.at_level(logging.WARNING, logger="aether.control_plane.monitoring"):
        await world.retrainer.tick()
    ended = next(d for d in records.list_decisions(world.sessions, "eta") if d.id == decision.id)
    assert ended.outcome == "evaluation_failed" and "champion keeps serving" in ended.reasons[-1]
    assert f"job {job.job_id}'s model failed" in ended.reasons[-1]
    assert "evaluation of the retraining of eta failed" in caplog.text
    assert evaluation_records.list_evaluations(world.sessions, "eta") == []
    assert primary_version(world) == world.champion
    assert world.registry.get_version("eta", alias="champion").version == world.champion
    assert world.registry.get_version("eta", challenger).approval.status != mpb.APPROVED

    again = await world.retrainer.trigger_now("eta", "alice", "please")
    assert again.triggered and not any("still running" in r for r in again.reasons)


async def test_a_job_whose_decision_write_failed_is_adopted_not_submitted_twice(world: World) -> None:
    """The database refuses the write that records the retraining as submitted (a SQL trigger here; a
    crash or a locked database alike). The job was submitted before its decision was stored, so it ran
    untracked, and the retry submitted a second job for the same window."""
    deploy_trained_champion(world, jpb.JobSpec(name="eta-train", entrypoint=jpb.Entrypoint(module="json")))
    refuse = "SELECT RAISE(ABORT, 'refused by the test') WHERE NEW.outcome = 'submitted'"
    with world.sessions() as session:
        session.execute(
            text(f"CREATE TRIGGER t_ins BEFORE INSERT ON retraining_decisions BEGIN {refuse}; END")
        )
        session.execute(
            text(f"CREATE TRIGGER t_upd BEFORE UPDATE ON retraining_decisions BEGIN {refuse}; END")
        )
        session.commit()
    with pytest.raises(sqlalchemy.exc.IntegrityError, match="refused by the test"):
        await world.retrainer.trigger_now("eta", "alice", "new data")
    with world.sessions() as session:
        session.execute(text("DROP TRIGGER t_ins"))
        session.execute(text("DROP TRIGGER t_upd"))
        session.commit()

    retried = await world.retrainer.trigger_now("eta", "alice", "new data (retry)")
    retraining = [j for j in world.jobs.list()[0] if "-retrain-" in j.spec.name]
    assert [j.job_id for j in retraining] == [retried.job_id] and retried.outcome == "submitted"
    assert retraining[0].spec.name.endswith(f"-d{retried.id}")
    assert "adopted" in retried.reasons[-1]
    assert [d.job_id for d in records.submitted(world.sessions, "eta")] == [retried.job_id]


async def test_invalid_data_window_blocks_retraining_with_an_alert(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # A feature view whose rule was tightened after rows were written: 75 °C is now out of range.
    world.features.create_entity(
        fpb.Entity(name="sensor", join_keys=[fpb.JoinKey(name="sensor_id", value_type=types_pb2.INT64)])
    )
    world.features.create_feature_view(
        fpb.FeatureViewSpec(
            name="climate",
            entity="sensor",
            features=[
                fpb.Feature(
                    name="temperature_c",
                    value_type=types_pb2.FLOAT32,
                    validation=fpb.ValidationRule(min_value=-40, max_value=60),
                )
            ],
        ),
        fpb.FeatureViewMetadata(),
    )
    now = dt.datetime.now(dt.UTC)
    world.offline.write(
        "climate",
        1,
        pa.table(
            {
                "sensor_id": pa.array([1, 2, 3, 4], pa.int64()),
                "event_ts": pa.array([now - dt.timedelta(hours=1)] * 4, pa.timestamp("us", tz="UTC")),
                "ingested_ts": pa.array([now] * 4, pa.timestamp("us", tz="UTC")),
                "temperature_c": pa.array([20.0, 21.0, 75.0, 22.0], pa.float32()),
            }
        ),
    )
    # The champion's training job and run (the supervisor creates the run and tags it with the job id).
    spec = jpb.JobSpec(
        name="eta-train", entrypoint=jpb.Entrypoint(module="control_plane"), features=["climate@1"]
    )
    trained = deploy_trained_champion(world, spec)
    jobs_before = len(world.jobs.list()[0])
    with caplog.at_level(logging.WARNING, logger="aether.control_plane.monitoring"):
        decision = await world.retrainer.trigger_now("eta", "alice", "new data arrived")
    assert decision.triggered and decision.rules == ["manual"] and decision.outcome == "blocked_validation"
    assert any("1 of 4 rows invalid" in r and "temperature_c: 75" in r for r in decision.reasons)
    assert "retraining of eta blocked (blocked_validation)" in caplog.text
    assert len(world.jobs.list()[0]) == jobs_before  # nothing was submitted
    assert primary_version(world) == trained

    # With the rows fixed, the same manual trigger submits the model's own spec over the new window.
    world.offline.write(
        "climate",
        1,
        pa.table(
            {
                "sensor_id": pa.array([5, 6, 7], pa.int64()),
                "event_ts": pa.array([now - dt.timedelta(minutes=5)] * 3, pa.timestamp("us", tz="UTC")),
                "ingested_ts": pa.array([now] * 3, pa.timestamp("us", tz="UTC")),
                "temperature_c": pa.array([20.0, 21.0, 22.0], pa.float32()),
            }
        ),
    )
    configs.put_config(
        world.sessions,
        pb.TriggerConfig(deployment="eta", enabled=True, min_rows=3, max_rejected_fraction=0.3),
        actor="operator",
    )
    submitted = await world.retrainer.trigger_now("eta", "alice")
    assert submitted.outcome == "submitted" and submitted.job_id
    new_job = world.jobs.get(submitted.job_id)
    assert new_job.spec.name.startswith("eta-train-retrain-") and new_job.submitted_by == "alice"
    assert list(new_job.spec.features) == ["climate@1"]
    assert new_job.spec.hyperparameters.fields["model_name"].string_value == "eta"
    again = await world.retrainer.trigger_now("eta", "alice")
    assert not again.triggered and "still running" in again.reasons[0]


async def test_manual_approval_waits_for_a_reviewer(world: World) -> None:
    configs.put_config(
        world.sessions,
        pb.TriggerConfig(
            deployment="eta",
            enabled=True,
            gates=pb.EvaluationGates(metric="mae", max_latency_ratio=-1),
            promotion=pb.PromotionPolicy(manual_approval=True),
        ),
        actor="operator",
    )
    challenger = world.register(linear(TRUE_W + 0.01))
    evaluation = await world.retrainer.evaluate_challenger(submitted_decision(world), challenger)
    assert evaluation.passed
    assert world.registry.get_version("eta", challenger).approval.status == mpb.PENDING_MANUAL_APPROVAL
    assert world.registry.get_version("eta", alias="challenger").version == challenger
    assert world.deployments.get("eta").canary.status == dpb.CANARY_STATUS_UNSPECIFIED
    await world.retrainer.advance_promotions()  # nobody approved yet: nothing moves
    assert (
        evaluation_records.list_evaluations(world.sessions, "eta")[0].promotion_status == "awaiting_approval"
    )
    world.registry.review("eta", challenger, mpb.APPROVED, "looks good", actor="reviewer")
    await world.retrainer.advance_promotions()
    assert evaluation_records.list_evaluations(world.sessions, "eta")[0].promotion_status == CANARY
    assert world.deployments.get("eta").canary.version == challenger
    assert world.registry.get_version("eta", alias="champion").version == world.champion


async def test_an_evaluation_whose_outcome_write_failed_is_stored_once(world: World) -> None:
    """The database is locked (another process holds its write lock) right after the evaluation is
    stored: the write recording the decision as evaluated failed, the decision stayed submitted, and the
    next tick evaluated it again and stored a second evaluation of the same decision."""
    job, run = succeeded_retraining_job(world)
    world.register(linear(TRUE_W + 0.01), run_id=run.run_id)
    decision = submitted_decision(world, job.job_id)

    database = world.sessions.kw["bind"].url.database
    impatient = create_db_engine(f"sqlite:///{database}", busy_timeout_s=0.2)
    sessions = create_session_factory(impatient)
    retrainer = restarted(world, time.time, sessions)
    other_process = sqlite3.connect(database, isolation_level=None, check_same_thread=False)

    # The write lock, held for a second: longer than the retrainer waits (0.2 s), shorter than the
    # registry and deployments cores do (30 s), so only the retrainer's next write fails.
    release = threading.Timer(1.0, other_process.execute, ("ROLLBACK",))

    def lock_once_an_evaluation_is_stored(session: Session) -> None:
        if session.info.pop("stored_evaluation", False) and not release.is_alive():
            other_process.execute("BEGIN IMMEDIATE")
            release.start()

    def note_evaluation(session: Session, _context: object, _instances: object) -> None:
        if any(isinstance(row, RetrainingEvaluationRow) for row in session.new):
            session.info["stored_evaluation"] = True

    event.listen(sessions, "before_flush", note_evaluation)
    event.listen(sessions, "after_commit", lock_once_an_evaluation_is_stored)
    try:
        await retrainer.follow_up()  # a write after the evaluation meets the lock and fails
        assert release.ident is not None  # the lock was taken
    finally:
        if release.ident is not None:
            release.join()
        other_process.close()
    await retrainer.follow_up()
    await retrainer.advance_promotions()

    evaluations = evaluation_records.list_evaluations(world.sessions, "eta")
    assert len(evaluations) == 1
    ended = next(d for d in records.list_decisions(world.sessions, "eta") if d.id == decision.id)
    assert ended.outcome == "evaluated"
    impatient.dispose()


async def test_entity_rows_a_recorded_dataset_cannot_be_rebuilt_over_block_the_retraining(
    world: World, tmp_path: Path
) -> None:
    """The champion's job trained on a recorded dataset (dataset_hash) whose record lists no features:
    the config's entity rows were validated and the decision said submitted, but the job trained on the
    old dataset again. Nothing says which features to join the new rows with, so nothing is submitted."""
    old = "ab" * 32
    record_dataset(world.offline, old, {"output_path": str(tmp_path / "old.parquet")})
    spec = jpb.JobSpec(
        name="eta-train", entrypoint=jpb.Entrypoint(module="json"), dataset=jpb.DatasetRef(dataset_hash=old)
    )
    deploy_trained_champion(world, spec)
    latest = tmp_path / "latest.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "y": [1.0, 2.0, 3.0]}), latest)
    config = pb.TriggerConfig(deployment="eta", enabled=True, min_rows=3, entity_rows_path=str(latest))
    configs.put_config(world.sessions, config, actor="operator")
    jobs_before = len(world.jobs.list()[0])
    decision = await world.retrainer.trigger_now("eta", "alice", "new data window")
    assert decision.outcome == "blocked_no_spec", decision.reasons
    assert f"dataset {old} lists no features" in decision.reasons[-1]
    assert len(world.jobs.list()[0]) == jobs_before
