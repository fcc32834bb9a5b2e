"""``aether.v1.Retraining`` on a real control plane: configuration with defaults and refusals through the
SDK, the background loop triggering on label volume (and blocking, with the reason, when the serving
version has no training job to resubmit), a manual trigger, and ``aetherctl retrain`` on top."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import grpc.aio
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import jobs_pb2 as jpb
from clients.aether.v1 import model_registry_pb2 as mpb
from clients.aether.v1 import monitoring_pb2 as monpb
from clients.aether.v1 import retraining_pb2 as pb
from clients.aether.v1 import retraining_pb2_grpc as pb_grpc
from clients.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from clients.sdk.retraining import RetrainingClient
from control_plane.api import retraining as retraining_api
from control_plane.artifacts.settings import store_for
from control_plane.audit.tables import AuditEntryRow
from control_plane.cli import retraining as retraining_cli
from control_plane.cli.main import main
from control_plane.db import write_session
from control_plane.deployments.core import DeploymentManager
from control_plane.ingestion.tables import IngestionRunRow
from control_plane.jobs.service import JobService
from control_plane.jobs.settings import JobsSettings
from control_plane.model_registry.registry import ModelRegistry
from control_plane.monitoring import config as monitor_configs
from control_plane.monitoring.feedback import IndexedPrediction, index_predictions, record_feedback
from control_plane.offline.compaction import CompactionPolicy, compact_view
from control_plane.offline.merged import REPLACED_KEY, is_merged_name
from control_plane.offline.store import OfflineStore
from control_plane.retraining import evaluation_records, records
from control_plane.retraining.config import put_config
from control_plane.retraining.evaluation import EvaluationResult, ModelScore
from control_plane.retraining.loop import RetrainingSettings
from control_plane.server import ControlPlaneServer, start_server
from control_plane.settings import ControlPlaneSettings
from control_plane.tracking.store import TrackingStore
from tests.unit.offline.builders import create_view, ensure_entity, feature_rows, feature_spec


@pytest.fixture
async def plane(tmp_path: Path, redis_url: str) -> AsyncIterator[ControlPlaneServer]:
    settings = ControlPlaneSettings(
        home=tmp_path,
        db_url=f"sqlite:///{tmp_path / 'aether.db'}",
        redis_url=redis_url,
        listen_addr="127.0.0.1:0",
        shutdown_grace_s=0.5,
    )
    loop_settings = RetrainingSettings(interval_s=0.05, stream="test:retraining")
    server = await start_server(settings, services=[retraining_api.services(loop_settings)])
    registry = ModelRegistry(server.context.sessions, store_for(tmp_path))
    artifact = registry.artifacts.put_bytes(b"onnx bytes")
    request = mpb.CreateModelVersionRequest(
        model_name="eta", artifact_sha256=artifact.sha256, create_model=True
    )
    version = registry.create_version(request, actor="trainer").version
    registry.review("eta", version, mpb.APPROVED, "", actor="reviewer")
    DeploymentManager(server.context.sessions, registry).create(
        dpb.CreateDeploymentRequest(
            name="eta",
            variants=[dpb.Variant(model_name="eta", version=version, role=dpb.VARIANT_ROLE_PRIMARY)],
        ),
        actor="operator",
    )
    yield server
    await server.stop()


def label_predictions(server: ControlPlaneServer, count: int) -> None:
    now = time.time_ns() // 1000
    sessions = server.context.sessions
    index_predictions(
        sessions,
        [IndexedPrediction(f"q{i}", 0, "eta", "eta", 1, "eta-v1", now, [1.0], False) for i in range(count)],
    )
    record_feedback(sessions, [monpb.Feedback(request_id=f"q{i}", label=1.0) for i in range(count)])


def give_the_monitor_a_task(server: ControlPlaneServer) -> None:
    monitor = monpb.MonitorConfig(deployment="eta", task=monpb.TASK_TYPE_REGRESSION)
    monitor_configs.put_config(server.context.sessions, monitor, actor="alice")


async def test_configure_loop_trigger_and_cli(plane: ControlPlaneServer) -> None:
    client = RetrainingClient(plane.address, actor="alice")
    give_the_monitor_a_task(plane)
    try:
        stored = await asyncio.to_thread(
            client.configure, "eta", enabled=True, new_labels=5, schedule="0 3 * * 1"
        )
        assert stored.cooldown_seconds == 3600 and stored.gates.max_relative_degradation == 0.005
        assert stored.gates.metric == stored.performance_metric and stored.updated_by == "alice"
        with pytest.raises(NotFound):
            await asyncio.to_thread(client.configure, "missing", enabled=True)
        # A typo's disabled defaults read as "retraining is off" there.
        with pytest.raises(NotFound, match="'etaa' not found"):
            await asyncio.to_thread(client.get_config, "etaa")
        assert (await asyncio.to_thread(client.get_config, "eta")).enabled
        with pytest.raises(InvalidArgument, match="cron"):
            await asyncio.to_thread(client.configure, "eta", schedule="61 * * * *")

        label_predictions(plane, 5)
        deadline = time.monotonic() + 10
        decisions = []
        while time.monotonic() < deadline:
            decisions = await asyncio.to_thread(client.decisions, "eta", triggered_only=True)
            if decisions:
                break
            await asyncio.sleep(0.05)
        assert decisions and decisions[0].rules == ["labels"] and decisions[0].actor == "retraining"
        assert decisions[0].outcome == "blocked_no_spec"
        assert "no training job recorded for eta v1" in decisions[0].reasons[-1]

        manual = await asyncio.to_thread(client.trigger_now, "eta", "try again")
        assert manual.rules == ["manual"] and manual.actor == "alice" and "try again" in manual.reasons[0]
        assert await asyncio.to_thread(client.evaluations, "eta") == []
        # A typo of a deployment's name read as "no retraining happened" (empty lists).
        for history in (client.decisions, client.evaluations):
            with pytest.raises(NotFound, match="'etaa' not found"):
                await asyncio.to_thread(history, "etaa")

        parser = argparse.ArgumentParser()
        retraining_cli.register(parser.add_subparsers())
        args = parser.parse_args(
            ["retrain", "history", "eta", "--control-plane", plane.address, "--timeout", "10"]
        )
        out = io.StringIO()
        async_code = await asyncio.to_thread(retraining_cli._history, client, args, out)
        assert async_code == 0 and "blocked_no_spec" in out.getvalue() and "manual" in out.getvalue()
    finally:
        client.close()


def test_the_contract_documents_what_trigger_now_returns() -> None:
    """A manual trigger that cannot retrain answers OK with its stored decision (above: blocked_no_spec),
    while the contract promised FAILED_PRECONDITION (no training spec, job running): a client written to
    it waited for an error that never came and took the decision for a retraining."""
    service = pb_grpc.RetrainingServicer.__doc__ or ""
    method = pb_grpc.RetrainingServicer.TriggerNow.__doc__ or ""
    assert "FAILED_PRECONDITION when a manual trigger cannot run" not in service
    assert "with OK" in method
    outcomes = ("submitted", "blocked_no_spec", "blocked_no_metric", "blocked_validation", "not_triggered")
    for outcome in (*outcomes, "submit_failed"):
        assert f'"{outcome}"' in method


async def test_a_metric_the_monitor_does_not_compute_is_refused(plane: ControlPlaneServer) -> None:
    # "acuracy" was stored: the performance rule never fired, and every challenger was rejected as
    # "challenger acuracy is undefined on the holdout".
    client = RetrainingClient(plane.address, actor="alice")
    try:
        with pytest.raises(InvalidArgument, match=r"performance_metric 'acuracy' .*'accuracy'"):
            await asyncio.to_thread(client.configure, "eta", performance_metric="acuracy")
        monitor = monpb.MonitorConfig(deployment="eta", task=monpb.TASK_TYPE_CLASSIFICATION)
        monitor_configs.put_config(plane.context.sessions, monitor, actor="alice")
        gates = pb.EvaluationGates(metric="mae")  # a regression metric, on a classifier
        with pytest.raises(InvalidArgument, match=r"gates.metric 'mae' .*\['accuracy', 'precision'"):
            await asyncio.to_thread(client.configure, "eta", gates=gates)
        stored = await asyncio.to_thread(client.configure, "eta", performance_metric="recall")
        assert (stored.performance_metric, stored.gates.metric) == ("recall", "recall")
    finally:
        client.close()


async def test_retraining_needs_a_monitor_task_before_any_job(plane: ControlPlaneServer) -> None:
    # With no task on the monitor the gates compute no metric: triggers were accepted with gates.metric
    # "", and every challenger retrained was Rejected "challenger  is undefined on the holdout".
    client = RetrainingClient(plane.address, actor="alice")
    try:
        with pytest.raises(FailedPrecondition, match=r"no task.*aetherctl monitor configure eta --task"):
            await asyncio.to_thread(client.configure, "eta", enabled=True, schedule="0 3 * * *")
        disabled = await asyncio.to_thread(client.configure, "eta", schedule="0 3 * * *")
        assert not disabled.enabled
        manual = await asyncio.to_thread(client.trigger_now, "eta", "try")
        assert manual.outcome == "blocked_no_metric" and not manual.job_id
        assert "has no task" in manual.reasons[-1]
        give_the_monitor_a_task(plane)
        enabled = await asyncio.to_thread(client.configure, "eta", enabled=True)
        assert enabled.enabled and enabled.gates.metric == ""  # follows the monitor's alert metric
    finally:
        client.close()


async def test_a_canary_policy_the_deployments_core_refuses_is_refused(plane: ControlPlaneServer) -> None:
    # Stored, it was refused only once a challenger passed its gates, and the challenger waited for ever.
    client = RetrainingClient(plane.address, actor="alice")
    try:
        promotion = pb.PromotionPolicy(canary=dpb.CanaryPolicy(steps_percent=[50.0, 10.0]))
        with pytest.raises(InvalidArgument, match=r"promotion.canary: canary steps must ascend"):
            await asyncio.to_thread(client.configure, "eta", promotion=promotion)
        promotion.canary.steps_percent[:] = [10.0, 50.0, 100.0]
        stored = await asyncio.to_thread(client.configure, "eta", promotion=promotion)
        assert list(stored.promotion.canary.steps_percent) == [10.0, 50.0, 100.0]
    finally:
        client.close()


async def test_a_config_whose_metric_the_task_no_longer_computes_can_still_be_disabled(
    plane: ControlPlaneServer,
) -> None:
    # Stored with "accuracy" for a classifier; the monitor's task then became regression. Re-sending the
    # stored config to disable it was refused for the stale metric, so retraining could not be turned off.
    client = RetrainingClient(plane.address, actor="alice")
    try:
        classifier = monpb.MonitorConfig(deployment="eta", task=monpb.TASK_TYPE_CLASSIFICATION)
        monitor_configs.put_config(plane.context.sessions, classifier, actor="alice")
        stored = await asyncio.to_thread(client.configure, "eta", enabled=True, performance_metric="accuracy")
        regressor = monpb.MonitorConfig(deployment="eta", task=monpb.TASK_TYPE_REGRESSION)
        monitor_configs.put_config(plane.context.sessions, regressor, actor="alice")
        stored.enabled = False
        disabled = await asyncio.to_thread(client.configure, "eta", stored)
        assert not disabled.enabled and disabled.performance_metric == "accuracy"
        stored.enabled = True  # enabled again, the stale metric is refused
        with pytest.raises(InvalidArgument, match=r"performance_metric 'accuracy' .*'mae'"):
            await asyncio.to_thread(client.configure, "eta", stored)
    finally:
        client.close()


async def test_an_empty_performance_metric_follows_the_monitor(plane: ControlPlaneServer) -> None:
    # "" (the monitor's alert metric) was stored as the alert metric of the moment ("mae"): once the
    # monitor became a classifier, the config no longer followed it and re-sending it enabled was refused.
    client = RetrainingClient(plane.address, actor="alice")
    try:
        regressor = monpb.MonitorConfig(deployment="eta", task=monpb.TASK_TYPE_REGRESSION)
        monitor_configs.put_config(plane.context.sessions, regressor, actor="alice")
        stored = await asyncio.to_thread(client.configure, "eta", enabled=True, performance_metric="")
        assert (stored.performance_metric, stored.gates.metric) == ("", "")
        classifier = monpb.MonitorConfig(deployment="eta", task=monpb.TASK_TYPE_CLASSIFICATION)
        monitor_configs.put_config(plane.context.sessions, classifier, actor="alice")
        stored.cooldown_seconds = 7200
        again = await asyncio.to_thread(client.configure, "eta", stored)
        assert (again.performance_metric, again.gates.metric, again.cooldown_seconds) == ("", "", 7200)
        assert (await asyncio.to_thread(client.get_config, "eta")).performance_metric == ""
    finally:
        client.close()


async def test_aetherctl_retrain_configure_changes_only_the_fields_given(
    plane: ControlPlaneServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """`retrain configure eta --cooldown 2h` used to send a whole config built from the flags alone:
    retraining came out disabled, with no schedule, rules, gates or approval. Like `monitor configure`,
    it now changes the fields given and keeps the others, the SDK's too (data_window_seconds)."""

    def aetherctl(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(["--control-plane", plane.address, "retrain", "configure", "eta", *argv])
        return code, capsys.readouterr().err

    client = RetrainingClient(plane.address, actor="alice")
    give_the_monitor_a_task(plane)
    try:
        await asyncio.to_thread(client.configure, "eta", data_window_seconds=86400.0)
        full = ["--enable", "--schedule", "0 3 * * 1", "--drift-alone", "--performance-threshold", "0.8"]
        full += ["--gate-metric", "mae", "--manual-approval", "--shadow", "30m", "--new-labels", "500"]
        assert await asyncio.to_thread(aetherctl, *full) == (0, "")
        assert await asyncio.to_thread(aetherctl, "--cooldown", "2h") == (0, "")
        stored = await asyncio.to_thread(client.get_config, "eta")
        assert (stored.enabled, stored.schedule, stored.drift, stored.drift_alone) == (
            True,
            "0 3 * * 1",
            True,
            True,
        )
        assert (stored.performance_threshold, stored.new_labels, stored.cooldown_seconds) == (0.8, 500, 7200)
        assert (stored.gates.metric, stored.promotion.manual_approval) == ("mae", True)
        assert (stored.promotion.shadow_seconds, stored.data_window_seconds) == (1800, 86400)

        # Every switch has its opposite; "" and --no-performance-rule take a rule away.
        off = ["--disable", "--no-drift", "--no-performance-rule", "--schedule", "", "--no-manual-approval"]
        assert await asyncio.to_thread(aetherctl, *off) == (0, "")
        stored = await asyncio.to_thread(client.get_config, "eta")
        assert (stored.enabled, stored.schedule, stored.drift, stored.drift_alone) == (
            False,
            "",
            False,
            False,
        )
        assert not stored.HasField("performance_threshold") and not stored.promotion.manual_approval
        assert (stored.cooldown_seconds, stored.gates.metric, stored.new_labels) == (7200, "mae", 500)

        # A gates' metric the server filled in from the performance metric follows it when that changes.
        assert await asyncio.to_thread(aetherctl, "--performance-metric", "mae", "--gate-metric", "") == (
            0,
            "",
        )
        assert await asyncio.to_thread(aetherctl, "--performance-metric", "rmse") == (0, "")
        stored = await asyncio.to_thread(client.get_config, "eta")
        assert (stored.performance_metric, stored.gates.metric) == ("rmse", "rmse")

        code, err = await asyncio.to_thread(aetherctl, "--drift-alone", "--no-drift")
        assert code == 2 and "--no-drift contradicts --drift-alone" in err
        assert (await asyncio.to_thread(client.get_config, "eta")).updated_at_us == stored.updated_at_us
    finally:
        client.close()


class ColleagueBetween(RetrainingClient):
    """The real client, with a colleague's whole command run right after this command reads the config
    (after each of its first ``reads`` reads), i.e. between its read and its write: the race of two
    `retrain configure` at once, interleaved by hand rather than hoped for."""

    def __init__(self, address: str, colleague: Callable[[], object], reads: int = 1) -> None:
        super().__init__(address, actor="alice")
        self.colleague, self.reads = colleague, reads

    def get_config(self, deployment: str) -> pb.TriggerConfig:
        config = super().get_config(deployment)
        if self.reads > 0:
            self.reads -= 1
            self.colleague()
        return config


def configure_racing(address: str, colleague: Callable[[], object], *flags: str, reads: int = 1) -> str:
    """`aetherctl retrain configure eta FLAGS` with ``colleague`` run between its read and its write."""
    parser = argparse.ArgumentParser(prog="aetherctl")
    retraining_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["retrain", "configure", "eta", *flags])
    out = io.StringIO()
    with ColleagueBetween(address, colleague, reads) as client:
        assert retraining_cli._configure(client, args, out) == 0
    return out.getvalue()


def audit_entries(server: ControlPlaneServer) -> int:
    """The trigger configs' audit entries (the retraining loop audits its decisions meanwhile)."""
    query = select(func.count()).where(AuditEntryRow.object_type == "retraining_config")
    with server.context.sessions() as session:
        return session.execute(query).scalar_one()


async def test_two_retrain_configures_at_once_both_land(plane: ControlPlaneServer) -> None:
    """An operator's `--disable` and a colleague's `--cooldown 2h` at once: each command read the config,
    laid its flags over it and sent the whole config back unconditionally, so both printed their result
    and exited 0 while the later one undid the other's change (retraining stayed enabled). Now the later
    write is refused (the config changed since it was read: ABORTED, nothing written or audited) and the
    command reads again and re-applies its own flags: both changes land."""
    give_the_monitor_a_task(plane)
    client = RetrainingClient(plane.address, actor="alice")
    try:
        await asyncio.to_thread(client.configure, "eta", enabled=True, cooldown_seconds=3600.0)

        def colleague() -> None:
            assert (
                main(["--control-plane", plane.address, "retrain", "configure", "eta", "--cooldown", "2h"])
                == 0
            )

        text = await asyncio.to_thread(configure_racing, plane.address, colleague, "--disable")
        assert text == "retraining of eta: disabled, cooldown 7200 s\n"
        stored = await asyncio.to_thread(client.get_config, "eta")
        assert (stored.enabled, stored.cooldown_seconds) == (False, 7200)

        # The server's side: a stale write is refused, naming the stored revision, and changes nothing.
        entries = audit_entries(plane)
        with pytest.raises(Aborted, match=f"now at revision {stored.revision}"):
            await asyncio.to_thread(
                client.configure, "eta", stored, expected_revision=stored.revision - 1, cooldown_seconds=60.0
            )
        again = await asyncio.to_thread(client.get_config, "eta")
        assert (again.cooldown_seconds, again.revision, audit_entries(plane)) == (
            7200,
            stored.revision,
            entries,
        )
        # An old client, sending no revision, replaces whatever is stored.
        old = await asyncio.to_thread(client.configure, "eta", stored, cooldown_seconds=60.0)
        assert (old.cooldown_seconds, old.revision) == (60, stored.revision + 1)

        # A command that loses every time gives up, saying so, having changed nothing.
        with pytest.raises(Aborted, match=r"changed by other writers 5 times.*changed nothing"):
            await asyncio.to_thread(configure_racing, plane.address, colleague, "--enable", reads=99)
        assert not (await asyncio.to_thread(client.get_config, "eta")).enabled
    finally:
        client.close()


async def test_a_stale_configure_is_aborted_before_checks_that_read_the_stored_config(
    plane: ControlPlaneServer,
) -> None:
    """A disabled config keeps a metric the monitor's task no longer computes; a colleague fixes the
    metric meanwhile. The stale write (only its cooldown changed) was checked against the stored metric
    it never read and refused INVALID_ARGUMENT, which the CLI does not retry: it must be ABORTED, so the
    command reads again and re-applies its flag. A revision below 0, which no read gives, is no retry."""
    give_the_monitor_a_task(plane)
    client = RetrainingClient(plane.address, actor="alice")
    try:
        read = await asyncio.to_thread(client.configure, "eta", performance_metric="mae")
        classify = monpb.MonitorConfig(deployment="eta", task=monpb.TASK_TYPE_CLASSIFICATION)
        monitor_configs.put_config(plane.context.sessions, classify, actor="alice")
        fixed = pb.TriggerConfig()
        fixed.CopyFrom(read)
        fixed.performance_metric, fixed.gates.metric = "accuracy", ""  # the colleague's change
        await asyncio.to_thread(client.configure, "eta", fixed, expected_revision=read.revision)
        with pytest.raises(Aborted, match=f"read at revision {read.revision}"):
            await asyncio.to_thread(
                client.configure, "eta", read, expected_revision=read.revision, cooldown_seconds=7200.0
            )
        with pytest.raises(InvalidArgument, match="expected_revision must be 0 or more"):
            await asyncio.to_thread(client.configure, "eta", read, expected_revision=-1)
        with pytest.raises(InvalidArgument, match="expected_revision"):
            await asyncio.to_thread(client.configure, "eta", read, expected_revision="3")
        command = ["--control-plane", plane.address, "retrain", "configure", "eta", "--cooldown", "2h"]
        assert await asyncio.to_thread(main, command) == 0
        stored = await asyncio.to_thread(client.get_config, "eta")
        assert (stored.performance_metric, stored.cooldown_seconds) == ("accuracy", 7200)
    finally:
        client.close()


@pytest.fixture
async def quiet_plane(tmp_path: Path, redis_url: str) -> AsyncIterator[ControlPlaneServer]:
    """The retraining service without its loop: the records a test writes stay as written."""
    settings = ControlPlaneSettings(
        home=tmp_path,
        db_url=f"sqlite:///{tmp_path / 'aether.db'}",
        redis_url=redis_url,
        listen_addr="127.0.0.1:0",
        shutdown_grace_s=0.5,
    )
    server = await start_server(settings, services=[retraining_api.services(run_loop=False)])
    yield server
    await server.stop()


def _long_reasons(item: int) -> list[str]:
    """About 48 KB of reasons: a hundred such items (one unpaged response) outgrow gRPC's 4 MiB."""
    return [f"item {item} reason {k}: " + "x" * 6000 for k in range(8)]


def _decision(sessions: sessionmaker[Session], item: int) -> int:
    draft = records.Draft("eta", at_us=item, triggered=True, rules=("manual",), actor="alice")
    return records.add_decision(sessions, draft, _long_reasons(item), "blocked_validation").id


def _evaluation(sessions: sessionmaker[Session], item: int) -> int:
    draft = records.Draft("eta", item, True, ("manual",), "alice", model_name="eta", champion_version=1)
    records.add_decision(sessions, draft, ["retrain"], records.SUBMITTED, job_id=f"job-{item}")
    [decision] = records.submitted(sessions, "eta")
    scores = ModelScore({"mae": 1.0}, 2.0), ModelScore({"mae": 2.0}, 3.0)
    result = EvaluationResult(False, tuple(_long_reasons(item)), *scores, 200, "production_feedback")
    return evaluation_records.add_evaluation(
        sessions, "eta", decision, item + 2, "mae", result, actor="alice"
    ).id


async def test_long_decisions_and_evaluations_are_listed_page_by_page(
    quiet_plane: ControlPlaneServer,
) -> None:
    """A hundred decisions or evaluations with long reasons made one ListDecisions or ListEvaluations
    response over gRPC's 4 MiB: the SDK and `aetherctl retrain history` failed RESOURCE_EXHAUSTED for
    good. Pages are cut by size now, and resume by id, so items stored between pages shift nothing."""
    sessions = quiet_plane.context.sessions
    decisions = [_decision(sessions, item) for item in range(110)]
    client = RetrainingClient(quiet_plane.address, actor="alice")
    try:
        async with grpc.aio.insecure_channel(quiet_plane.address) as channel:
            stub = pb_grpc.RetrainingStub(channel)  # type: ignore[no-untyped-call]
            first = await stub.ListDecisions(pb.ListDecisionsRequest(deployment="eta"))
            assert first.ByteSize() < 4 * 1024 * 1024 and first.next_page_token
            newer = _decision(sessions, 110)  # stored while the client pages
            seen, token = [d.id for d in first.decisions], first.next_page_token
            while token:
                page = await stub.ListDecisions(pb.ListDecisionsRequest(deployment="eta", page_token=token))
                seen, token = seen + [d.id for d in page.decisions], page.next_page_token
            assert seen == decisions[::-1]  # each once, newest first; the newer one is ahead of the cursor
            foreign = pb.ListDecisionsRequest(
                deployment="eta", triggered_only=True, page_token=first.next_page_token
            )
            with pytest.raises(grpc.aio.AioRpcError, match="different deployment or filter") as refused:
                await stub.ListDecisions(foreign)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        everything = [d.id for d in await asyncio.to_thread(client.decisions, "eta", limit=1000)]
        assert everything == [newer, *decisions[::-1]]
        assert [d.id for d in await asyncio.to_thread(client.decisions, "eta")] == everything[:100]

        evaluations = [_evaluation(sessions, item) for item in range(110)]
        listed = await asyncio.to_thread(client.evaluations, "eta", limit=1000)
        assert [e.id for e in listed] == evaluations[::-1]
        assert len(listed[0].reasons) == 8 and len(await asyncio.to_thread(client.evaluations, "eta")) == 100
    finally:
        client.close()


def _serve_a_champion_trained_on(server: ControlPlaneServer, home: Path, features: list[str]) -> None:
    """Deployment ``eta`` serving a version registered from the run of a training job whose spec reads
    ``features``, as the supervisor records it (the run tagged with the job's id), with a monitor task and
    an enabled trigger config: what a manual trigger needs to reach the data window's check."""
    sessions = server.context.sessions
    offline = OfflineStore(str(home / "offline"))
    jobs = JobService(sessions, JobsSettings(folder=home / "jobs"), server.registry, offline)
    spec = jpb.JobSpec(name="eta-train", entrypoint=jpb.Entrypoint(module="control_plane"), features=features)
    job = jobs.submit(spec, actor="trainer")
    tracking = TrackingStore(sessions)
    experiment = tracking.create_experiment("eta-train", actor="supervisor")
    run = tracking.create_run(
        experiment.experiment_id, "eta-train", {}, {"aether.job_id": job.job_id}, actor="supervisor"
    )
    registry = ModelRegistry(sessions, store_for(home))
    artifact = registry.artifacts.put_bytes(b"onnx bytes")
    request = mpb.CreateModelVersionRequest(
        model_name="eta", artifact_sha256=artifact.sha256, create_model=True, run_id=run.run_id
    )
    version = registry.create_version(request, actor="trainer").version
    registry.review("eta", version, mpb.APPROVED, "", actor="reviewer")
    DeploymentManager(sessions, registry).create(
        dpb.CreateDeploymentRequest(
            name="eta",
            variants=[dpb.Variant(model_name="eta", version=version, role=dpb.VARIANT_ROLE_PRIMARY)],
        ),
        actor="operator",
    )
    monitor = monpb.MonitorConfig(deployment="eta", task=monpb.TASK_TYPE_REGRESSION, alert_metric="mae")
    monitor_configs.put_config(sessions, monitor, actor="operator")
    config = pb.TriggerConfig(
        deployment="eta", enabled=True, gates=pb.EvaluationGates(metric="mae"), min_rows=3
    )
    put_config(sessions, config, actor="operator")


def _count_ingested(server: ControlPlaneServer, view: str, accepted: int) -> None:
    """An ingestion run of ``view`` version 1 that counted ``accepted`` rows stored offline, as a run does
    in the transaction after its offline write."""
    with write_session(server.context.sessions) as session:
        session.add(
            IngestionRunRow(
                run_id=f"batch-{view}", view=view, version=1, source_kind="batch", source_id="test",
                records_in=accepted, accepted=accepted, quarantined=0, started_at_us=0, updated_at_us=0,
            )
        )  # fmt: skip


async def test_a_data_window_whose_offline_folder_is_gone_blocks_the_retraining_naming_the_store(
    quiet_plane: ControlPlaneServer, tmp_path: Path
) -> None:
    """The data window was read through a store without the check that ingestion counted rows into a view
    version (``OfflineStore``'s ``counted``), which the offline features service has: a view whose
    folder was lost (a volume not mounted, another ``AETHER_OFFLINE_ROOT``) read as a window with no rows,
    and the retraining was blocked for "0 rows in the last 604800 s", as though no data had arrived. The
    window is read as training sets are now: the decision, through TriggerNow, names the missing folder
    and the rows counted into it, and no job is submitted."""
    await asyncio.to_thread(ensure_entity, quiet_plane.registry)
    await asyncio.to_thread(create_view, quiet_plane.registry, feature_spec("stats"))
    offline = OfflineStore(str(tmp_path / "offline"))
    now = dt.datetime.now(dt.UTC)
    times = [now - dt.timedelta(minutes=m) for m in range(1, 6)]
    offline.write("stats", 1, feature_rows({"user_id": range(5)}, times, {"score": [1.0] * 5}))
    await asyncio.to_thread(_count_ingested, quiet_plane, "stats", 5)
    await asyncio.to_thread(_serve_a_champion_trained_on, quiet_plane, tmp_path, ["stats:score"])
    shutil.rmtree(tmp_path / "offline" / "stats" / "v1")

    client = RetrainingClient(quiet_plane.address, actor="alice")
    try:
        decision = await asyncio.to_thread(client.trigger_now, "eta", "new data")
    finally:
        client.close()
    assert decision.triggered and decision.outcome == "blocked_validation", decision
    gone = (
        f"data window invalid: stats@1: the offline store {tmp_path / 'offline'} has no folder for feature"
        " view 'stats' version 1"
    )
    assert any(r.startswith(gone) and "counted 5 rows" in r for r in decision.reasons), decision.reasons
    assert not any("0 rows in the last" in r for r in decision.reasons)


async def test_a_data_window_file_that_cannot_be_read_blocks_the_retraining_naming_the_file(
    quiet_plane: ControlPlaneServer, tmp_path: Path
) -> None:
    """A data file of the window overwritten with garbage after it was written (pyarrow's ArrowInvalid as
    its footer is parsed): the window's check raised it, and TriggerNow answered INTERNAL "unexpected
    error" with no decision stored. It is the store's FAILED_PRECONDITION now, the blocked decision's
    reason, naming the file; no job is submitted."""
    await asyncio.to_thread(ensure_entity, quiet_plane.registry)
    await asyncio.to_thread(create_view, quiet_plane.registry, feature_spec("stats"))
    offline = OfflineStore(str(tmp_path / "offline"))
    now = dt.datetime.now(dt.UTC)
    times = [now - dt.timedelta(minutes=m) for m in range(1, 6)]
    (written,) = offline.write("stats", 1, feature_rows({"user_id": range(5)}, times, {"score": [1.0] * 5}))
    await asyncio.to_thread(_count_ingested, quiet_plane, "stats", 5)
    await asyncio.to_thread(_serve_a_champion_trained_on, quiet_plane, tmp_path, ["stats:score"])
    await asyncio.to_thread(Path(written).write_bytes, b"not a Parquet file" * 10)

    client = RetrainingClient(quiet_plane.address, actor="alice")
    try:
        decision = await asyncio.to_thread(client.trigger_now, "eta", "new data")
    finally:
        client.close()
    assert decision.triggered and decision.outcome == "blocked_validation", decision
    unreadable = (
        f"data window invalid: stats@1: the offline store {tmp_path / 'offline'} could not read {written}:"
        " ArrowInvalid: Parquet magic bytes not found"
    )
    assert any(r.startswith(unreadable) for r in decision.reasons), decision.reasons


async def test_a_data_window_merged_file_whose_record_is_damaged_blocks_the_retraining_naming_it(
    quiet_plane: ControlPlaneServer, tmp_path: Path
) -> None:
    """The window's two files merged by a real compaction pass, then the merged file written again with a
    footer record that is not JSON (bytes flipped): every listing of the partition raised a
    JSONDecodeError, TriggerNow answered INTERNAL and the retraining loop failed every tick with no
    decision and no alert. It is the store's FAILED_PRECONDITION now, the blocked decision's reason,
    naming the merged file."""
    await asyncio.to_thread(ensure_entity, quiet_plane.registry)
    await asyncio.to_thread(create_view, quiet_plane.registry, feature_spec("stats"))
    offline = OfflineStore(str(tmp_path / "offline"))
    now = dt.datetime.now(dt.UTC)
    times = [now - dt.timedelta(minutes=1)] * 5  # one partition, whatever the time of day
    for first in (0, 5):
        offline.write(
            "stats", 1, feature_rows({"user_id": range(first, first + 5)}, times, {"score": [1.0] * 5})
        )
    await asyncio.to_thread(_count_ingested, quiet_plane, "stats", 10)
    eager = CompactionPolicy(min_files=1, min_age_s=0, lateness_s=0, grace_s=3600)
    compact_view(offline, "stats", 1, eager, now=now + dt.timedelta(days=2))
    (merged,) = offline.files("stats", 1)
    assert is_merged_name(Path(merged).name)
    parquet = pq.ParquetFile(merged)
    table = parquet.read()
    parquet.close()
    with pq.ParquetWriter(merged, table.schema) as writer:
        writer.write_table(table)
        writer.add_key_value_metadata({REPLACED_KEY: b'{"format":1,"compacted_at_us":17'})
    await asyncio.to_thread(_serve_a_champion_trained_on, quiet_plane, tmp_path, ["stats:score"])

    client = RetrainingClient(quiet_plane.address, actor="alice")
    try:
        decision = await asyncio.to_thread(client.trigger_now, "eta", "new data")
    finally:
        client.close()
    assert decision.triggered and decision.outcome == "blocked_validation", decision
    damaged = f"UndecodableFile: the record of the files the merged file {merged} replaced does not decode"
    assert any(r.startswith("data window invalid: stats@1: ") and damaged in r for r in decision.reasons), (
        decision.reasons
    )
