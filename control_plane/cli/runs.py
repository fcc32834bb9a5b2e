"""``aetherctl experiments ...`` and ``aetherctl runs ...``: experiment tracking from the command line,
through the Python SDK. Experiments are named by name; runs by id."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from clients.aether.v1 import tracking_pb2 as pb
from control_plane.cli import numbers, output, paging
from control_plane.cli.errors import UsageError
from control_plane.cli.settings import actor

# Imported when a command runs, not to build the parser: the SDK imports grpc.
if TYPE_CHECKING:
    from clients.sdk.tracking import TrackingClient

_AGGREGATES = ("latest", "min", "max")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--control-plane", metavar="HOST:PORT", default=argparse.SUPPRESS, help="control plane address"
    )
    common.add_argument(
        "--timeout", type=numbers.positive_seconds, default=argparse.SUPPRESS, help="seconds per call"
    )
    common.add_argument("--json", action="store_true", help="print JSON for scripts instead of tables")

    experiments = subparsers.add_parser("experiments", help="experiment tracking: experiments")
    actions = experiments.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[common], help="every experiment")
    listing.set_defaults(handler=_handler(_list_experiments))
    create = actions.add_parser("create", parents=[common], help="create an experiment")
    create.add_argument("name")
    create.add_argument("--description", default="")
    create.set_defaults(handler=_handler(_create_experiment))

    runs = subparsers.add_parser("runs", help="experiment tracking: runs and their comparison")
    actions = runs.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[common], help="runs of an experiment, newest first")
    listing.add_argument("experiment", metavar="EXPERIMENT")
    listing.add_argument(
        "--limit", type=numbers.limit, default=50, help="at most this many runs (default %(default)s)"
    )
    listing.set_defaults(handler=_handler(_list_runs))
    get = actions.add_parser("get", parents=[common], help="one run with its parameters and metrics")
    get.add_argument("run_id", metavar="RUN")
    get.set_defaults(handler=_handler(_get_run))
    compare = actions.add_parser(
        "compare", parents=[common], help="runs x metrics and parameters, filtered and sorted"
    )
    compare.add_argument("experiment", metavar="EXPERIMENT")
    compare.add_argument(
        "--metrics",
        default="",
        help="comma-separated metric columns, each named once; KEY or KEY:min / KEY:max",
    )
    compare.add_argument("--params", default="", help="comma-separated parameter columns, each named once")
    compare.add_argument("--filter", default="", help="e.g. 'metrics.loss < 0.5 and params.lr = \"0.01\"'")
    compare.add_argument(
        "--sort", action="append", default=[], help="sort key, e.g. 'metrics.loss' or 'metrics.acc desc'"
    )
    compare.add_argument(
        "--limit", type=numbers.limit, default=50, help="at most this many rows (default %(default)s)"
    )
    compare.set_defaults(handler=_handler(_compare))


def _handler(action: Callable[[TrackingClient, argparse.Namespace, TextIO], int]) -> Callable[..., int]:
    def handle(args: argparse.Namespace) -> int:
        from clients.sdk.tracking import TrackingClient

        with TrackingClient(
            args.control_plane, actor=actor(), timeout=args.timeout, close_timeout_s=args.timeout
        ) as client:
            return action(client, args, sys.stdout)

    return handle


def _status(status: int) -> str:
    return pb.RunStatus.Name(status).removeprefix("RUN_STATUS_")


def _list_experiments(client: TrackingClient, args: argparse.Namespace, out: TextIO) -> int:
    experiments = client.list_experiments()
    if args.json:
        output.print_json([output.to_jsonable(e) for e in experiments], out)
        return 0
    rows = [(e.name, e.experiment_id, output.timestamp(e.created_at_us), e.description) for e in experiments]
    print(output.table(("NAME", "ID", "CREATED", "DESCRIPTION"), rows), file=out)
    return 0


def _create_experiment(client: TrackingClient, args: argparse.Namespace, out: TextIO) -> int:
    experiment = client.create_experiment(args.name, args.description)
    if args.json:
        output.print_json(output.to_jsonable(experiment), out)
    else:
        print(f"created experiment {experiment.name} ({experiment.experiment_id})", file=out)
    return 0


def _list_runs(client: TrackingClient, args: argparse.Namespace, out: TextIO) -> int:
    experiment = client.get_experiment(args.experiment)

    def fetch(size: int, token: str) -> tuple[Sequence[pb.Run], str]:
        page = client.list_runs(experiment.experiment_id, size, token)
        return page.runs, page.next_page_token

    runs, more = paging.up_to(args.limit, fetch)
    _print_runs(runs, args.json, out)
    if more:
        paging.say_more(
            f"more runs exist: these are the newest {len(runs)} (--limit); raise --limit for older ones"
        )
    return 0


def _print_runs(runs: list[pb.Run], as_json: bool, out: TextIO) -> None:
    if as_json:
        output.print_json([output.to_jsonable(run) for run in runs], out)
        return
    rows = [
        (
            run.run_id,
            run.name,
            _status(run.status),
            output.timestamp(run.start_time_us),
            _seconds(run.duration_us),
        )
        for run in runs
    ]
    print(output.table(("RUN", "NAME", "STATUS", "STARTED", "DURATION"), rows), file=out)


def _seconds(microseconds: int) -> str:
    return f"{microseconds / 1e6:.1f}s" if microseconds else "-"


def _get_run(client: TrackingClient, args: argparse.Namespace, out: TextIO) -> int:
    run = client.get_run(args.run_id)
    if args.json:
        output.print_json(output.to_jsonable(run), out)
        return 0
    print(f"run {run.run_id} ({run.name}) {_status(run.status)}", file=out)
    print(f"  started {output.timestamp(run.start_time_us)}, duration {_seconds(run.duration_us)}", file=out)
    print(f"  params: {output.tags(dict(run.params))}", file=out)
    print(f"  tags:   {output.tags(dict(run.tags))}", file=out)
    if run.metrics:
        rows = [
            (
                m.key,
                _number(m.latest_value),
                m.latest_step,
                _number(m.min_value),
                _number(m.max_value),
                m.count,
            )
            for m in run.metrics
        ]
        print(output.table(("METRIC", "LATEST", "STEP", "MIN", "MAX", "POINTS"), rows), file=out)
    for artifact in run.artifacts:
        print(f"  artifact {artifact.name}: sha256:{artifact.sha256} ({artifact.size} bytes)", file=out)
    return 0


def _number(value: float) -> str:
    return f"{value:.6g}"


def _items(spec: str) -> list[str]:
    """The comma-separated items of ``--metrics`` or ``--params``, blanks dropped."""
    return [part.strip() for part in spec.split(",") if part.strip()]


def _metric_column(item: str) -> tuple[str, str]:
    # Only a last part that is an aggregate is one: ``eval:loss_min`` is the metric of that name.
    key, _, aggregate = item.rpartition(":")
    if not key or aggregate not in _AGGREGATES:
        key, aggregate = item, "latest"
    return key, aggregate


def _header(key: str, aggregate: str) -> str:
    return key if aggregate == "latest" else f"{aggregate}({key})"


def _refuse_repeats(flag: str, items: list[str], headers: list[str]) -> None:
    """A column asked for twice is a usage error. The table printed it twice while the JSON, which keys a
    row's cells by column name, kept one: the two outputs disagreed. ``loss`` and ``loss:latest`` are one
    column; ``loss:max`` and a metric named ``max(loss)`` would share a name."""
    first: dict[str, str] = {}
    for item, header in zip(items, headers, strict=True):
        if header not in first:
            first[header] = item
            continue
        earlier = first[header]
        said = f"{item!r} is given twice" if earlier == item else f"{earlier!r} and {item!r} both name"
        raise UsageError(f"{flag}: {said} the column {header}; name each column once")


def _compare(client: TrackingClient, args: argparse.Namespace, out: TextIO) -> int:
    metric_items = _items(args.metrics)
    metrics = [_metric_column(item) for item in metric_items]
    headers = [_header(key, aggregate) for key, aggregate in metrics]
    params = _items(args.params)
    _refuse_repeats("--metrics", metric_items, headers)  # before any call
    _refuse_repeats("--params", params, params)
    experiment = client.get_experiment(args.experiment)
    rows: list[pb.CompareRow] = []
    token, total = "", 0
    while len(rows) < args.limit:
        page = client.compare_runs(
            experiment.experiment_id,
            metrics=metrics,
            params=params,
            filter=args.filter,
            order_by=args.sort,
            page_size=min(args.limit - len(rows), 1000),
            page_token=token,
        )
        rows.extend(page.rows)
        total, token = page.total_count, page.next_page_token
        if not token:
            break
    if args.json:
        data: dict[str, Any] = {"total_count": total, "rows": []}
        for row in rows:
            cells = {
                h: (c.value if c.HasField("value") else None)
                for h, c in zip(headers, row.metrics, strict=True)
            }
            values = {
                p: (c.value if c.HasField("value") else None) for p, c in zip(params, row.params, strict=True)
            }
            data["rows"].append(
                {
                    "run_id": row.run_id,
                    "name": row.name,
                    "status": _status(row.status),
                    "metrics": cells,
                    "params": values,
                }
            )
        output.print_json(data, out)
        return 0
    table_rows = [
        (
            row.run_id,
            row.name,
            _status(row.status),
            *(_number(c.value) if c.HasField("value") else "-" for c in row.metrics),
            *(c.value if c.HasField("value") else "-" for c in row.params),
        )
        for row in rows
    ]
    print(output.table(("RUN", "NAME", "STATUS", *headers, *params), table_rows), file=out)
    print(f"{len(rows)} of {total} matching run(s)", file=out)
    return 0
