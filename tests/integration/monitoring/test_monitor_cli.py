"""``aetherctl monitor show|configure`` against a real control plane: a configure changes only the fields
it is given (the RPC replaces the whole config), and the change is audited under the CLI's user."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import io
import json
from collections.abc import Callable

import grpc
import grpc.aio
import pytest
from sqlalchemy import func, select

from clients.aether.v1 import monitoring_pb2 as pb
from clients.errors import Aborted
from clients.sdk.monitoring import MonitoringClient
from control_plane.audit.tables import AuditEntryRow
from control_plane.cli import monitor_config
from control_plane.deployments.core import DeploymentManager
from control_plane.monitoring.tables import MonitorConfigRow
from tests.integration.monitoring.conftest import Plane


def cli(plane: Plane, *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="aetherctl")
    parser.add_argument("--control-plane", default=plane.server.address)
    parser.add_argument("--timeout", type=float, default=10.0)
    monitor_config.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = args.handler(args)
    return code, out.getvalue()


async def test_configure_changes_only_the_given_fields(plane: Plane) -> None:
    plane.deploy("churn")
    code, text = await asyncio.to_thread(cli, plane, "monitor", "show", "churn", "--json")
    assert code == 0 and json.loads(text)["task"] == "TASK_TYPE_UNSPECIFIED"  # the defaults

    code, text = await asyncio.to_thread(
        cli, plane, "monitor", "configure", "churn", "--task", "regression", "--window-rows", "40",
        "--test", "ks", "--min-labels", "5", "--json",
    )  # fmt: skip
    assert code == 0 and json.loads(text)["task"] == "TASK_TYPE_REGRESSION"

    code, _ = await asyncio.to_thread(
        cli, plane, "monitor", "configure", "churn", "--alert-metric", "mae", "--alert-threshold", "0.5"
    )
    assert code == 0
    stored = await plane.stub.GetMonitorConfig(pb.GetMonitorConfigRequest(deployment="churn"))
    assert stored.task == pb.TASK_TYPE_REGRESSION and stored.test == pb.DRIFT_TEST_KS
    assert (stored.window_rows, stored.min_labels) == (40, 5)
    assert (stored.alert_metric, stored.alert_threshold) == ("mae", 0.5)
    assert stored.updated_by == getpass.getuser()

    code, _ = await asyncio.to_thread(cli, plane, "monitor", "configure", "churn", "--disable")
    stored = await plane.stub.GetMonitorConfig(pb.GetMonitorConfigRequest(deployment="churn"))
    assert code == 0 and stored.disabled and stored.window_rows == 40


async def test_show_and_configure_print_text_and_json_with_the_flag(plane: Plane) -> None:
    """Both printed JSON only, and took no --json, unlike every other command: now readable text, one row
    per setting, unless --json asks for the JSON they printed before."""
    plane.deploy("churn")
    code, text = await asyncio.to_thread(cli, plane, "monitor", "show", "churn")
    assert code == 0 and text.splitlines()[0] == "monitor of deployment churn: enabled"
    rows = _rows(text)
    assert rows["task"] == "none (no quality metrics)" and "alert" not in rows
    assert rows["drift test"] == (
        "psi, threshold 0.2, Benjamini-Hochberg correction; the dataset drifts at 30% of features"
    )
    assert rows["drift windows"] == "every 1000 rows; a feature needs 30 values to be scored"
    assert rows["updated"] == "never: the defaults"

    code, text = await asyncio.to_thread(
        cli, plane, "monitor", "configure", "churn", "--task", "regression", "--window", "time",
        "--window-seconds", "600", "--alert-threshold", "2.5", "--performance-window-seconds", "3600",
        "--performance-step-seconds", "600", "--webhook-url", "https://hooks.example.com/T/secret",
    )  # fmt: skip
    assert code == 0 and not text.lstrip().startswith("{")
    rows = _rows(text)
    assert rows["task"] == "regression" and rows["alert"] == "when mae > 2.5"
    assert rows["drift windows"] == "every 600 s of prediction time; a feature needs 30 values to be scored"
    assert rows["quality windows"] == "3600 s, starting every 600 s (sliding); scored from 50 labels"
    assert rows["predictions"] == "the model's first output"
    assert rows["webhook"].startswith("https://hooks.example.com/<redacted sha256:"), rows["webhook"]
    assert rows["updated"].endswith(f"by {getpass.getuser()} (revision 1)"), rows["updated"]

    code, text = await asyncio.to_thread(
        cli, plane, "monitor", "configure", "churn", "--task", "classification", "--disable"
    )
    rows = _rows(text)
    assert code == 0 and text.splitlines()[0].endswith(": disabled (no drift windows or quality alerts)")
    assert rows["alert"] == "none (no threshold for accuracy)", rows  # mae's threshold dropped, as noted
    assert rows["predictions"] == "the model's first output; positive class 1, decision threshold 0.5"

    code, text = await asyncio.to_thread(cli, plane, "monitor", "show", "churn", "--json")
    assert code == 0 and json.loads(text)["disabled"] is True


def _rows(text: str) -> dict[str, str]:
    """The SETTING -> VALUE rows of a printed config (below its first line and the table's header)."""
    lines = text.splitlines()
    assert lines[1].split() == ["SETTING", "VALUE"], text
    start = lines[1].index("VALUE")
    return {line[:start].strip(): line[start:] for line in lines[2:]}


async def test_derived_fields_follow_the_fields_they_derive_from(plane: Plane) -> None:
    """The step (= the width unless set), the drift threshold (the test's default) and the alert metric
    (the task's first) are re-derived when their source changes: sent back as read, the default 3600 s step
    made a 60 s window fail and a 7200 s one overlap, and ``--test ks`` kept PSI's 0.2 as KS's level."""
    plane.deploy("late")
    code, text = await asyncio.to_thread(
        cli, plane, "monitor", "configure", "late", "--task", "regression",
        "--performance-window-seconds", "60", "--json",
    )  # fmt: skip
    shown = json.loads(text)
    assert code == 0 and (shown["performance_window_seconds"], shown["performance_step_seconds"]) == (60, 60)
    code, text = await asyncio.to_thread(
        cli, plane, "monitor", "configure", "late", "--performance-window-seconds", "7200"
    )
    stored = await plane.stub.GetMonitorConfig(pb.GetMonitorConfigRequest(deployment="late"))
    assert code == 0 and (stored.performance_window_seconds, stored.performance_step_seconds) == (7200, 7200)

    # A step set apart from the width is the user's and is kept when the width changes.
    code, _ = await asyncio.to_thread(
        cli, plane, "monitor", "configure", "late", "--performance-step-seconds", "600"
    )
    code, _ = await asyncio.to_thread(
        cli, plane, "monitor", "configure", "late", "--performance-window-seconds", "3600"
    )
    stored = await plane.stub.GetMonitorConfig(pb.GetMonitorConfigRequest(deployment="late"))
    assert code == 0 and (stored.performance_window_seconds, stored.performance_step_seconds) == (3600, 600)

    code, _ = await asyncio.to_thread(
        cli, plane, "monitor", "configure", "late", "--test", "ks", "--task", "classification"
    )
    stored = await plane.stub.GetMonitorConfig(pb.GetMonitorConfigRequest(deployment="late"))
    assert code == 0 and (stored.threshold, stored.alert_metric) == (0.05, "accuracy")


async def test_a_step_set_equal_to_the_width_stays_when_the_width_changes(plane: Plane) -> None:
    """A step given explicitly equal to the width was stored like no step at all, so the next width
    change moved the step with it (hourly windows every hour became 2-hour windows every 2 hours)."""
    plane.deploy("hourly")
    code, _ = await asyncio.to_thread(
        cli, plane, "monitor", "configure", "hourly", "--performance-step-seconds", "3600"
    )
    assert code == 0
    code, _ = await asyncio.to_thread(
        cli, plane, "monitor", "configure", "hourly", "--performance-window-seconds", "7200"
    )
    stored = await plane.stub.GetMonitorConfig(pb.GetMonitorConfigRequest(deployment="hourly"))
    assert code == 0 and (stored.performance_window_seconds, stored.performance_step_seconds) == (7200, 3600)
    assert stored.performance_step_set

    # 0 gives the step back to the width, which it then follows.
    code, _ = await asyncio.to_thread(
        cli, plane, "monitor", "configure", "hourly", "--performance-step-seconds", "0"
    )
    code, _ = await asyncio.to_thread(
        cli, plane, "monitor", "configure", "hourly", "--performance-window-seconds", "600"
    )
    stored = await plane.stub.GetMonitorConfig(pb.GetMonitorConfigRequest(deployment="hourly"))
    assert code == 0 and (stored.performance_window_seconds, stored.performance_step_seconds) == (600, 600)
    assert not stored.performance_step_set


async def test_a_threshold_is_dropped_when_its_metric_or_test_changes(plane: Plane) -> None:
    """A threshold set for one alert metric or drift test is not carried over to another: kept, "alert
    when accuracy < 0.9" became "alert when MAE > 0.9" after ``--task regression``, and KS's significance
    level 0.01 became a PSI threshold. Given in the same command, the new threshold is the user's."""
    plane.deploy("swap")
    await asyncio.to_thread(
        cli, plane, "monitor", "configure", "swap", "--task", "classification", "--alert-threshold", "0.9",
        "--test", "ks", "--threshold", "0.01",
    )  # fmt: skip
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code, text = await asyncio.to_thread(
            cli, plane, "monitor", "configure", "swap", "--task", "regression", "--test", "psi", "--json"
        )
    stored = await plane.stub.GetMonitorConfig(pb.GetMonitorConfigRequest(deployment="swap"))
    assert code == 0 and json.loads(text)["alert_metric"] == "mae"
    assert stored.alert_metric == "mae" and not stored.HasField("alert_threshold")
    assert (stored.test, stored.threshold) == (pb.DRIFT_TEST_PSI, 0.2)
    notes = err.getvalue()
    assert "alert threshold 0.9 was set for 'accuracy'" in notes and "'mae'" in notes
    assert "drift threshold 0.01 was set for DRIFT_TEST_KS" in notes

    await asyncio.to_thread(
        cli, plane, "monitor", "configure", "swap", "--task", "classification", "--alert-threshold", "0.7",
        "--test", "ks", "--threshold", "0.02",
    )  # fmt: skip
    stored = await plane.stub.GetMonitorConfig(pb.GetMonitorConfigRequest(deployment="swap"))
    assert (stored.alert_metric, stored.alert_threshold, stored.threshold) == ("accuracy", 0.7, 0.02)
    # Another field changed: both thresholds stay.
    await asyncio.to_thread(cli, plane, "monitor", "configure", "swap", "--min-labels", "9")
    stored = await plane.stub.GetMonitorConfig(pb.GetMonitorConfigRequest(deployment="swap"))
    assert (stored.alert_threshold, stored.threshold, stored.min_labels) == (0.7, 0.02, 9)


async def test_an_unknown_deployment_is_not_found_but_a_deleted_ones_history_stays_readable(
    plane: Plane,
) -> None:
    """A misspelt name was configured (stored, audited, exit 0) and its reads answered "no drift reports",
    so a user believed it was monitored; retrain configure answered NOT_FOUND for the same name."""
    reads = [
        plane.stub.GetMonitorConfig(pb.GetMonitorConfigRequest(deployment="churn-typo")),
        plane.stub.GetDriftReports(pb.GetDriftReportsRequest(deployment="churn-typo")),
        plane.stub.GetPerformance(pb.GetPerformanceRequest(deployment="churn-typo")),
    ]
    for call in reads:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        assert "deployment 'churn-typo' not found" in str(refused.value.details())
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await plane.stub.ConfigureMonitor(
            pb.ConfigureMonitorRequest(config=pb.MonitorConfig(deployment="churn-typo"))
        )
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert "aetherctl deploy list" in str(refused.value.details())
    with plane.server.context.sessions() as session:
        assert session.get(MonitorConfigRow, "churn-typo") is None  # nothing stored (nor audited)

    plane.deploy("churn")
    code, _ = await asyncio.to_thread(cli, plane, "monitor", "configure", "churn", "--task", "regression")
    assert code == 0
    DeploymentManager(plane.server.context.sessions, plane.registry).delete("churn", actor="operator")
    stored = await plane.stub.GetMonitorConfig(pb.GetMonitorConfigRequest(deployment="churn"))
    assert stored.task == pb.TASK_TYPE_REGRESSION
    await plane.stub.GetDriftReports(pb.GetDriftReportsRequest(deployment="churn"))
    answer = await plane.stub.GetPerformance(pb.GetPerformanceRequest(deployment="churn"))
    assert answer.deployment == "churn"
    with pytest.raises(grpc.aio.AioRpcError) as refused:  # no reconfiguring a deleted deployment
        await plane.stub.ConfigureMonitor(
            pb.ConfigureMonitorRequest(config=pb.MonitorConfig(deployment="churn"))
        )
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


class ColleagueBetween(MonitoringClient):
    """The real client, with a colleague's whole command run right after this command reads the config
    (after its first ``reads`` reads), i.e. between its read and its write: the race of two `monitor
    configure` at once, interleaved by hand rather than hoped for."""

    def __init__(self, address: str, colleague: Callable[[], object], reads: int = 1) -> None:
        super().__init__(address)
        self.colleague, self.reads = colleague, reads

    def get_config(self, deployment: str) -> pb.MonitorConfig:
        config = super().get_config(deployment)
        if self.reads > 0:
            self.reads -= 1
            self.colleague()
        return config


def configure_racing(plane: Plane, colleague: Callable[[], object], *flags: str, reads: int = 1) -> str:
    """`aetherctl monitor configure churn FLAGS` with ``colleague`` run between its read and write."""
    parser = argparse.ArgumentParser(prog="aetherctl")
    monitor_config.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["monitor", "configure", "churn", *flags])
    out = io.StringIO()
    with ColleagueBetween(plane.server.address, colleague, reads) as client:
        assert monitor_config._configure(client, args, out) == 0
    return out.getvalue()


def audit_entries(plane: Plane) -> int:
    """The monitor configs' audit entries (nothing else counted that a background loop might write)."""
    query = select(func.count()).where(AuditEntryRow.action == "monitoring.configure")
    with plane.server.context.sessions() as session:
        return session.execute(query).scalar_one()


async def test_two_configures_at_once_both_land(plane: Plane) -> None:
    """Each command read the config, laid its flags over it and sent the whole config back unconditionally:
    both exited 0, and the later one undid the earlier's change; with a webhook change in the race, the
    loser was refused for a "redacted URL" it never sent. Now the later write is refused (the config
    changed since it was read: ABORTED) and the command reads again and re-applies its own flags."""
    plane.deploy("churn")
    base = ["monitor", "configure", "churn", "--task", "regression", "--alert-threshold", "2"]
    assert (await asyncio.to_thread(cli, plane, *base, "--webhook-url", "https://hooks.example.com/T/one"))[
        0
    ] == 0

    def colleague(*flags: str) -> Callable[[], object]:
        return lambda: cli(plane, "monitor", "configure", "churn", *flags)

    text = await asyncio.to_thread(
        configure_racing, plane, colleague("--window-rows", "600"), "--alert-threshold", "3", "--json"
    )
    stored = await plane.stub.GetMonitorConfig(pb.GetMonitorConfigRequest(deployment="churn"))
    assert (stored.alert_threshold, stored.window_rows) == (3, 600)  # both changes
    assert json.loads(text)["alert_threshold"] == 3 and json.loads(text)["window_rows"] == 600

    url = "https://hooks.example.com/T/two"
    await asyncio.to_thread(
        configure_racing, plane, colleague("--webhook-url", url), "--alert-threshold", "4"
    )
    with plane.server.context.sessions() as session:
        row = session.get(MonitorConfigRow, "churn")
        assert row is not None and (row.config["webhook_url"], row.config["alert_threshold"]) == (url, 4)


async def test_a_stale_configure_is_refused_unrecorded_and_an_unconditional_one_replaces(
    plane: Plane,
) -> None:
    plane.deploy("churn")
    first = await plane.stub.ConfigureMonitor(
        pb.ConfigureMonitorRequest(config=pb.MonitorConfig(deployment="churn"))
    )
    second = await plane.stub.ConfigureMonitor(
        pb.ConfigureMonitorRequest(
            config=pb.MonitorConfig(deployment="churn", window_rows=50), expected_revision=1
        )
    )
    assert (first.revision, second.revision) == (1, 2)
    entries = audit_entries(plane)
    stale = pb.ConfigureMonitorRequest(
        config=pb.MonitorConfig(deployment="churn", window_rows=70), expected_revision=1
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await plane.stub.ConfigureMonitor(stale)
    assert refused.value.code() == grpc.StatusCode.ABORTED
    assert "now at revision 2" in str(refused.value.details())
    stored = await plane.stub.GetMonitorConfig(pb.GetMonitorConfigRequest(deployment="churn"))
    assert (stored.window_rows, stored.revision, audit_entries(plane)) == (50, 2, entries)  # nothing
    # An old client, sending no revision, replaces whatever is stored.
    old = await plane.stub.ConfigureMonitor(
        pb.ConfigureMonitorRequest(config=pb.MonitorConfig(deployment="churn", window_rows=70))
    )
    assert (old.window_rows, old.revision) == (70, 3)

    # A command that loses every time gives up, saying so, having changed nothing.
    def forever() -> None:
        cli(plane, "monitor", "configure", "churn", "--min-labels", "7")

    with pytest.raises(Aborted, match=r"changed by other writers 5 times.*changed nothing"):
        await asyncio.to_thread(configure_racing, plane, forever, "--window-rows", "90", reads=99)
    stored = await plane.stub.GetMonitorConfig(pb.GetMonitorConfigRequest(deployment="churn"))
    assert (stored.window_rows, stored.min_labels) == (70, 7)
