"""``aetherctl monitor show|configure DEPLOYMENT``: a deployment's monitor (drift windows and tests, the
task its labels are scored as, quality alerts) from the command line.

``configure`` changes only the fields given as flags: it reads the effective config first and sends it
back with those fields replaced (the ConfigureMonitor RPC replaces the whole config). A field the server
derives from another (the step from the quality window's width unless one was given, the threshold from
the drift test, the alert metric from the task) is sent back only where it differs from what the server
would derive (the step: where the server says it was given, ``performance_step_set``), so it
follows a change of the field it derives from: sent back as read, a default step of 3600 s made
``--performance-window-seconds 60`` fail (step > width) and 7200 give overlapping windows, and
``--test ks`` kept PSI's 0.2 as the KS significance level. A threshold the user set belongs to its
metric or test: when that changes and the same command gives no new threshold, the threshold is dropped
(the server then applies the new one's default) and a line on stderr says so; kept, "alert when accuracy
< 0.9" became "alert when MAE > 0.9" after ``--task regression``, and KS's 0.01 a PSI threshold. The
webhook URL is read redacted (it is often a credential: ``control_plane.monitoring.webhooks``) and sent
back so: the server reads its own redacted form as "keep the stored URL"."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.cli import monitor_text, output
from control_plane.cli.conditional import read_change_write
from control_plane.cli.numbers import positive_seconds, uint32, uint64
from control_plane.cli.settings import actor

# Imported when a command runs, not to build the parser: the SDK imports grpc, and the monitoring config
# the metadata database (SQLAlchemy).
if TYPE_CHECKING:
    from clients.sdk.monitoring import MonitoringClient

_TASKS = {"none": pb.TASK_TYPE_UNSPECIFIED, "classification": pb.TASK_TYPE_CLASSIFICATION,
          "regression": pb.TASK_TYPE_REGRESSION}  # fmt: skip
_TESTS = {"psi": pb.DRIFT_TEST_PSI, "jsd": pb.DRIFT_TEST_JSD, "ks": pb.DRIFT_TEST_KS,
          "wasserstein": pb.DRIFT_TEST_WASSERSTEIN}  # fmt: skip
_WINDOWS = {"count": pb.WINDOW_KIND_COUNT, "time": pb.WINDOW_KIND_TIME}
# Flag destination -> (MonitorConfig field, how the flag's text becomes the field's value).
_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "task": ("task", _TASKS.__getitem__),
    "test": ("test", _TESTS.__getitem__),
    "threshold": ("threshold", float),
    "window": ("window_kind", _WINDOWS.__getitem__),
    "window_rows": ("window_rows", int),
    "window_seconds": ("window_seconds", float),
    "min_samples": ("min_samples", int),
    "prediction_output": ("prediction_output", str),
    "min_labels": ("min_labels", int),
    "performance_window_seconds": ("performance_window_seconds", float),
    "performance_step_seconds": ("performance_step_seconds", float),
    "alert_metric": ("alert_metric", str),
    "alert_threshold": ("alert_threshold", float),
    "webhook_url": ("webhook_url", str),
    "disabled": ("disabled", bool),
}
_SERVER_SET = {"deployment", "updated_by", "updated_at_us", "performance_step_set", "revision"}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--control-plane", metavar="HOST:PORT", default=argparse.SUPPRESS, help="control plane address"
    )
    common.add_argument(
        "--timeout", type=positive_seconds, default=argparse.SUPPRESS, help="seconds per call"
    )
    common.add_argument("--json", action="store_true", help="print JSON for scripts instead of text")
    monitor = subparsers.add_parser("monitor", help="a deployment's monitor: drift windows, task, alerts")
    actions = monitor.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", parents=[common], help="the effective monitor config")
    show.add_argument("deployment", metavar="DEPLOYMENT")
    show.set_defaults(handler=_handler(_show))
    configure = actions.add_parser(
        "configure", parents=[common], help="change the given fields of the monitor config"
    )
    configure.add_argument("deployment", metavar="DEPLOYMENT")
    configure.add_argument("--task", choices=sorted(_TASKS), help="how labels are scored (none: no metrics)")
    configure.add_argument("--test", choices=sorted(_TESTS), help="the per-feature drift test")
    configure.add_argument("--threshold", type=float, help="the drift test's threshold")
    configure.add_argument("--window", choices=sorted(_WINDOWS), help="drift windows by rows or by time")
    configure.add_argument("--window-rows", type=uint64, help="rows per count window")
    configure.add_argument("--window-seconds", type=float, help="seconds per time window")
    configure.add_argument("--min-samples", type=uint32, help="fewest values a feature needs to be scored")
    configure.add_argument("--prediction-output", help="the model output holding predictions")
    configure.add_argument(
        "--min-labels", type=uint32, help="fewest labels before a quality window is scored"
    )
    configure.add_argument("--performance-window-seconds", type=float, help="width of quality windows")
    configure.add_argument(
        "--performance-step-seconds",
        type=float,
        help="quality windows start this often (0 = the width: tumbling; smaller: sliding windows)",
    )
    configure.add_argument("--alert-metric", help="the quality metric watched (accuracy, mae, ...)")
    configure.add_argument("--alert-threshold", type=float, help="alert when the metric crosses this")
    configure.add_argument("--webhook-url", help="where alerts are POSTed (empty: log only)")
    state = configure.add_mutually_exclusive_group()
    state.add_argument("--disable", dest="disabled", action="store_const", const=True, help="stop monitoring")
    state.add_argument("--enable", dest="disabled", action="store_const", const=False, help="monitor again")
    configure.set_defaults(handler=_handler(_configure))


def _handler(action: Callable[[MonitoringClient, argparse.Namespace, TextIO], int]) -> Callable[..., int]:
    def handle(args: argparse.Namespace) -> int:
        from clients.sdk.monitoring import MonitoringClient

        with MonitoringClient(args.control_plane, actor=actor(), timeout=args.timeout) as client:
            return action(client, args, sys.stdout)

    return handle


def merged(
    current: pb.MonitorConfig, args: argparse.Namespace, notes: list[str] | None = None
) -> dict[str, Any]:
    """The fields to send: the current config's, with those given as flags replaced. A line for each
    threshold dropped because its metric or test changed is appended to ``notes``."""
    fields = {d.name: value for d, value in current.ListFields() if d.name not in _SERVER_SET}
    for name in _derived(current):
        fields.pop(name, None)
    for flag, (name, convert) in _FIELDS.items():
        value = getattr(args, flag, None)
        if value is not None:
            fields[name] = convert(value)
    dropped = _orphaned_thresholds(current, fields, args)
    for name, _why in dropped:
        fields.pop(name, None)
    if notes is not None:
        notes.extend(why for _name, why in dropped)
    return fields


def _orphaned_thresholds(
    current: pb.MonitorConfig, fields: dict[str, Any], args: argparse.Namespace
) -> list[tuple[str, str]]:
    """(field, why) for each threshold still in ``fields`` whose metric or test this command changes
    without giving a new threshold: its value means something else, or is out of range, for the new one."""
    from control_plane.monitoring.config import metric_names

    out = []
    test = fields.get("test", pb.DRIFT_TEST_PSI)
    if "threshold" in fields and args.threshold is None and test != current.test:
        new_test, old_test = pb.DriftTest.Name(test), pb.DriftTest.Name(current.test)
        out.append(
            (
                "threshold",
                f"drift threshold {current.threshold:g} was set for {old_test}: dropped, "
                f"{new_test} takes its default; give --threshold to set one",
            )
        )
    metrics = metric_names(fields.get("task", pb.TASK_TYPE_UNSPECIFIED))
    metric = fields.get("alert_metric") or (metrics[0] if metrics else "")
    if "alert_threshold" in fields and args.alert_threshold is None and metric != current.alert_metric:
        now = f"the alert metric is now {metric!r}" if metric else "no alert metric is left"
        out.append(
            (
                "alert_threshold",
                f"alert threshold {current.alert_threshold:g} was set for "
                f"{current.alert_metric!r}; {now}: dropped, give --alert-threshold to set one",
            )
        )
    return out


def _derived(config: pb.MonitorConfig) -> list[str]:
    """The fields of an effective ``config`` that hold what the server fills in from another field (see
    ``control_plane.monitoring.config.effective``); left out, the server derives them again from the
    values sent. A threshold or alert metric set equal to the derived one is indistinguishable from it
    and follows too; the step is derived only where the server says it was not given
    (``performance_step_set``): a step set equal to the width stays when the width changes."""
    from control_plane.monitoring.config import DEFAULT_THRESHOLDS, metric_names

    derived = []
    # A step apart from its width was given, whatever the flag says (a server before the flag).
    if (
        not config.performance_step_set
        and config.performance_step_seconds == config.performance_window_seconds
    ):
        derived.append("performance_step_seconds")  # tumbling windows stay tumbling
    if config.HasField("threshold") and config.threshold == DEFAULT_THRESHOLDS.get(config.test):
        derived.append("threshold")
    metrics = metric_names(config.task)
    if metrics and config.alert_metric == metrics[0]:
        derived.append("alert_metric")
    return derived


def _show(client: MonitoringClient, args: argparse.Namespace, out: TextIO) -> int:
    _print(client.get_config(args.deployment), args, out)
    return 0


def _print(config: pb.MonitorConfig, args: argparse.Namespace, out: TextIO) -> None:
    if args.json:
        output.print_json(output.to_jsonable(config), out)
    else:
        monitor_text.print_config(config, out)


def _configure(client: MonitoringClient, args: argparse.Namespace, out: TextIO) -> int:
    notes: list[str] = []

    def write(current: pb.MonitorConfig) -> pb.MonitorConfig:
        notes.clear()  # of the config this attempt read
        fields = merged(current, args, notes)
        return client.configure(args.deployment, expected_revision=current.revision, **fields)

    config = read_change_write(
        lambda: client.get_config(args.deployment),
        write,
        f"the monitor config of deployment {args.deployment!r}",
    )
    for note in notes:  # on stderr: stdout stays the config (with --json, its JSON)
        print(f"note: {note}", file=sys.stderr)
    _print(config, args, out)
    return 0
