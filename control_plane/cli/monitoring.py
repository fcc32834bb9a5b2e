"""``aetherctl drift report``, ``aetherctl feedback record`` and ``aetherctl performance``: monitoring from
the command line, through the SDK.

``feedback record`` reads JSON lines, one label each (``row`` defaults to 0; ``deployment``, optional,
names the deployment whose prediction the label is for, where several deployments may see the same
request id — without it the label applies to that request id's prediction in every deployment)::

    {"request_id": "4f1c...", "label": 1}
    {"request_id": "9a0b...", "label": 0, "row": 2, "deployment": "churn"}
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.cli import numbers, output, paging
from control_plane.cli.durations import time_us
from control_plane.cli.paths import read_text_input
from control_plane.cli.settings import actor

# Imported when a command runs, not to build the parser: the SDK imports grpc.
if TYPE_CHECKING:
    from clients.sdk.monitoring import MonitoringClient


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--control-plane", metavar="HOST:PORT", default=argparse.SUPPRESS, help="control plane address"
    )
    common.add_argument(
        "--timeout", type=numbers.positive_seconds, default=argparse.SUPPRESS, help="seconds per call"
    )
    common.add_argument("--json", action="store_true", help="print JSON for scripts instead of tables")

    drift = subparsers.add_parser("drift", help="data and prediction drift of deployments")
    drift_actions = drift.add_subparsers(dest="action", required=True, metavar="ACTION")
    report = drift_actions.add_parser("report", parents=[common], help="drift reports of a deployment")
    report.add_argument("deployment", metavar="DEPLOYMENT")
    report.add_argument("--since", help="a duration back from now (30m, 6h, 2d, 1h30m) or an ISO time")
    report.add_argument(
        "--limit", type=numbers.limit, default=20, help="at most this many reports (default %(default)s)"
    )
    report.add_argument("--features", action="store_true", help="also list every feature of each report")
    report.set_defaults(handler=_handler(_drift_report))

    feedback = subparsers.add_parser("feedback", help="labels of served predictions, by request id")
    feedback_actions = feedback.add_subparsers(dest="action", required=True, metavar="ACTION")
    record = feedback_actions.add_parser(
        "record",
        parents=[common],
        help="send labels from a JSON-lines file",
        description='labels from a JSON-lines file: one object per line, {"request_id": "...", "label": 3.5,'
        ' "row": 0}. request_id is the id a Predict answer carried; label the true class code or value;'
        " row (optional, default 0) the row of a request that scored several entities; deployment"
        " (optional) the deployment whose prediction it labels, where deployments share request ids"
        " (without it the label applies to that request id in every deployment).",
    )
    record.add_argument("file", metavar="FILE.jsonl", help="path, or - for standard input")
    record.set_defaults(handler=_handler(_feedback_record))

    perf = subparsers.add_parser(
        "performance", parents=[common], help="model quality per window of a deployment"
    )
    perf.add_argument("deployment", metavar="DEPLOYMENT")
    perf.add_argument("--since", help="a duration back from now (30m, 6h, 2d) or an ISO time (default 24h)")
    perf.set_defaults(handler=_handler(_performance))


def _handler(action: Callable[[MonitoringClient, argparse.Namespace, TextIO], int]) -> Callable[..., int]:
    def handle(args: argparse.Namespace) -> int:
        from clients.sdk.monitoring import MonitoringClient

        with MonitoringClient(args.control_plane, actor=actor(), timeout=args.timeout) as client:
            return action(client, args, sys.stdout)

    return handle


def read_feedback(source: str) -> list[pb.Feedback]:
    from clients.errors import InvalidArgument

    text = read_text_input(source, "feedback")
    items: list[pb.Feedback] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(_feedback(json.loads(line)))
        except (ValueError, KeyError, TypeError, OverflowError) as exc:
            raise InvalidArgument(
                f'{source}:{number}: expected {{"request_id": "...", "label": N[, "row": N]'
                f'[, "deployment": "..."]}}: {exc}'
            ) from None
    return items


def _feedback(data: object) -> pb.Feedback:
    """One label, its values taken as they are: ``str()`` and ``int()`` turned ``"request_id": null``
    into the id "None" (then counted as orphaned) and ``"row": 2.9`` into row 2."""
    if not isinstance(data, dict):
        raise TypeError(f"a JSON object, not {json.dumps(data)[:60]}")
    request_id, label, row = data["request_id"], data["label"], data.get("row", 0)
    if not isinstance(request_id, str):
        raise TypeError(f"request_id must be a string, got {json.dumps(request_id)[:60]}")
    deployment = data.get("deployment", "")
    if not isinstance(deployment, str):
        raise TypeError(f"deployment must be a string, got {json.dumps(deployment)[:60]}")
    if isinstance(label, bool) or not isinstance(label, int | float):
        raise TypeError(f"label must be a number, got {json.dumps(label)[:60]}")
    # A whole float (3.0, as pandas writes an integer column holding nulls) is the row it names.
    whole = isinstance(row, int) or (isinstance(row, float) and row.is_integer())
    if isinstance(row, bool) or not whole or not 0 <= row <= 2**32 - 1:
        raise TypeError(f"row must be a whole number from 0 to 4294967295, got {json.dumps(row)[:60]}")
    return pb.Feedback(request_id=request_id, label=float(label), row=int(row), deployment=deployment)


def _since(args: argparse.Namespace) -> int:
    """``--since`` in microseconds; 0 (unset) leaves the range to the server's default."""
    return time_us(args.since, "--since") if args.since else 0


def _number(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4g}"


def _drift_status(value: pb.DriftStatus) -> str:
    return pb.DriftStatus.Name(value).removeprefix("DRIFT_STATUS_").lower() if value else "-"


def _performance_status(value: pb.PerformanceStatus) -> str:
    return pb.PerformanceStatus.Name(value).removeprefix("PERFORMANCE_STATUS_").lower() if value else "-"


def _drift_report(client: MonitoringClient, args: argparse.Namespace, out: TextIO) -> int:
    since_us = _since(args)
    reports, more = paging.up_to(
        args.limit,
        lambda size, token: client.drift_reports_page(
            args.deployment, since_us=since_us, limit=size, page_token=token
        ),
    )
    _print_drift_reports(reports, args, out)
    if more:  # last, below the reports
        paging.say_more(
            f"more drift reports exist: these are the newest {len(reports)} (--limit); raise --limit for"
            " older ones"
        )
    return 0


def _print_drift_reports(reports: list[pb.DriftReport], args: argparse.Namespace, out: TextIO) -> None:
    if args.json:
        output.print_json([output.to_jsonable(report) for report in reports], out)
        return
    if not reports:
        print(f"no drift reports for deployment {args.deployment}", file=out)
        return
    rows = [
        (
            report.id,
            output.timestamp(report.window_end_us),
            f"{report.model_name} v{report.version}",
            report.n_rows,
            report.late_rows + report.mismatched_rows,
            _drift_status(report.status),
            f"{report.drifted_share:.0%}",
            ",".join(f.name for f in report.features if f.drifted) or "-",
            _drift_status(report.prediction_status),
        )
        for report in reports
    ]
    print(
        output.table(
            ("ID", "WINDOW END", "MODEL", "ROWS", "DROPPED", "STATUS", "DRIFTED", "FEATURES", "PREDICTIONS"),
            rows,
        ),
        file=out,
    )
    if args.features:
        for report in reports:
            print(
                f"\nreport {report.id} ({pb.DriftTest.Name(report.test).removeprefix('DRIFT_TEST_').lower()},"
                f" threshold {report.threshold:g})",
                file=out,
            )
            feature_rows = [
                (
                    f.name,
                    _number(f.score),
                    _drifted(f),
                    f.n_current,
                    f.missing_current,
                )
                for f in [*report.features, *report.outputs]
            ]
            if feature_rows:
                print(
                    output.table(("FEATURE", "SCORE", "DRIFTED", "VALUES", "MISSING"), feature_rows), file=out
                )
            else:
                print("no feature scores", file=out)


def _drifted(feature: pb.FeatureDrift) -> str:
    """The DRIFTED cell of a feature: yes, no, insufficient, or not compared and why (unpaired by name)."""
    if feature.not_compared:
        return f"not compared: {feature.not_compared}"
    return "yes" if feature.drifted else ("insufficient" if feature.insufficient else "no")


def _feedback_record(client: MonitoringClient, args: argparse.Namespace, out: TextIO) -> int:
    result = client.record_feedback(read_feedback(args.file))
    if args.json:
        output.print_json(output.to_jsonable(result), out)
    else:
        print(
            f"recorded {result.recorded} labels: {result.joined} joined, {result.orphaned} orphaned "
            f"({result.orphaned_total} orphaned in all)",
            file=out,
        )
    return 0


def _performance(client: MonitoringClient, args: argparse.Namespace, out: TextIO) -> int:
    response = client.performance(args.deployment, since_us=_since(args))
    if args.json:
        output.print_json(output.to_jsonable(response), out)
        return 0
    if response.task == pb.TASK_TYPE_UNSPECIFIED:
        print(
            f"deployment {args.deployment} has no task configured: no quality metrics "
            f"(set one: aetherctl monitor configure {args.deployment} --task classification|regression)",
            file=out,
        )
        return 0
    names = sorted({name for window in response.windows for name in window.metrics})
    # Labelled predictions that were missing or not finite (left out of the metrics): shown when any.
    invalid = any(window.n_invalid_predictions for window in response.windows)
    rows = [
        (
            output.timestamp(window.start_us),
            output.timestamp(window.end_us),
            window.n_predictions,
            window.n_labels,
            _performance_status(window.status),
            *(_number(window.metrics[name]) if name in window.metrics else "-" for name in names),
            *((window.n_invalid_predictions,) if invalid else ()),
        )
        for window in response.windows
        if window.n_predictions or window.n_labels
    ]
    headers = (
        "START", "END", "PREDICTIONS", "LABELS", "STATUS", *(name.upper() for name in names),
        *(("INVALID",) if invalid else ()),
    )  # fmt: skip
    print(output.table(headers, rows) if rows else "no predictions in range", file=out)
    if response.range_cut:  # the default 24 h held more windows than one reply may: the most recent
        print(
            f"range cut to the most recent {len(response.windows)} windows, from"
            f" {output.timestamp(response.since_us)} (at most 2000 a reply; --since for an earlier range)",
            file=out,
        )
    # An orphaned label names only a request id: its prediction was never indexed, so no deployment is
    # known for it and the count is every deployment's. Printed bare, it read as this deployment's.
    print(
        f"orphaned feedback (all deployments, labels whose prediction was not logged): "
        f"{response.orphaned_feedback}",
        file=out,
    )
    # Joined, but logged without the output the config names: said, or they read as unexplained INVALID.
    for item in response.unscored:
        if item.reason:  # not scorable as logged: the reason says why
            print(
                f"not scored: {item.n_labels} labelled predictions of {item.model_name} v{item.version}: "
                f"{item.reason}",
                file=out,
            )
            continue
        print(
            f"not scored: {item.n_labels} labelled predictions of {item.model_name} v{item.version}, logged "
            f"without the output {item.output!r} (the monitor config's prediction_output)",
            file=out,
        )
    return 0
