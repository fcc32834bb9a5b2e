"""``aetherctl retrain trigger|configure|history``: retraining triggers and their outcomes from the command
line, through the SDK.

    aetherctl retrain configure churn --enable --schedule "0 3 * * 1" --drift \\
        --performance-threshold 0.8 --cooldown 6h --manual-approval
    aetherctl retrain configure churn --cooldown 2h     # changes the cooldown alone
    aetherctl retrain trigger churn --reason "relabelled last month"
    aetherctl retrain history churn            # decisions, then evaluations with their promotion
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from control_plane.cli import output, paging, retrain_config
from control_plane.cli.conditional import read_change_write
from control_plane.cli.numbers import limit, positive_seconds
from control_plane.cli.settings import actor

# Imported when a command runs, not to build the parser: the SDK imports grpc.
if TYPE_CHECKING:
    from clients.aether.v1 import retraining_pb2 as pb
    from clients.sdk.retraining import RetrainingClient


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--control-plane", metavar="HOST:PORT", default=argparse.SUPPRESS, help="control plane address"
    )
    common.add_argument(
        "--timeout", type=positive_seconds, default=argparse.SUPPRESS, help="seconds per call"
    )
    common.add_argument("--json", action="store_true", help="print JSON for scripts instead of tables")

    retrain = subparsers.add_parser("retrain", help="retraining triggers, evaluations and promotions")
    actions = retrain.add_subparsers(dest="action", required=True, metavar="ACTION")

    trigger = actions.add_parser(
        "trigger",
        parents=[common],
        help="retrain a deployment's model now",
        description="Retrain a deployment's model now. Prints the decision: 'submitted' with its job, or why"
        " it did not retrain (blocked_no_spec, blocked_no_metric, blocked_validation, not_triggered: a job"
        " still running or a promotion in progress,"
        " submit_failed) with the reasons; exits 1 unless submitted.",
    )
    trigger.add_argument("deployment", metavar="DEPLOYMENT")
    trigger.add_argument("--reason", default="", help="why (recorded in the decision and the audit log)")
    trigger.set_defaults(handler=_handler(_trigger))

    configure = actions.add_parser(
        "configure",
        parents=[common],
        help="change the given fields of a deployment's trigger rules",
        description=retrain_config.DESCRIPTION,
    )
    configure.add_argument("deployment", metavar="DEPLOYMENT")
    retrain_config.add_arguments(configure)
    configure.set_defaults(handler=_handler(_configure))

    history = actions.add_parser("history", parents=[common], help="decisions and evaluations")
    history.add_argument("deployment", metavar="DEPLOYMENT")
    history.add_argument("--all", action="store_true", help="also decisions that did not retrain")
    history.add_argument("--limit", type=limit, default=20, help="at most this many of each (%(default)s)")
    history.set_defaults(handler=_handler(_history))


def _handler(action: Callable[[RetrainingClient, argparse.Namespace, TextIO], int]) -> Callable[..., int]:
    def handle(args: argparse.Namespace) -> int:
        from clients.sdk.retraining import RetrainingClient

        with RetrainingClient(args.control_plane, actor=actor(), timeout=args.timeout) as client:
            return action(client, args, sys.stdout)

    return handle


def _configure(client: RetrainingClient, args: argparse.Namespace, out: TextIO) -> int:
    fields = retrain_config.changes(args)  # a bad flag is refused before anything is read or written

    def write(current: pb.TriggerConfig) -> pb.TriggerConfig:
        config = retrain_config.merged(current, fields)
        return client.configure(args.deployment, config, expected_revision=current.revision)

    stored = read_change_write(
        lambda: client.get_config(args.deployment),
        write,
        f"the retraining config of deployment {args.deployment!r}",
    )
    if args.json:
        output.print_json(output.to_jsonable(stored), out)
    else:
        state = "enabled" if stored.enabled else "disabled"
        print(f"retraining of {stored.deployment}: {state}, cooldown {stored.cooldown_seconds:g} s", file=out)
    return 0


def _trigger(client: RetrainingClient, args: argparse.Namespace, out: TextIO) -> int:
    decision = client.trigger_now(args.deployment, args.reason)
    if args.json:
        output.print_json(output.to_jsonable(decision), out)
    else:
        print(f"{decision.outcome}" + (f" (job {decision.job_id})" if decision.job_id else ""), file=out)
        for reason in decision.reasons:
            print(f"  {reason}", file=out)
    return 0 if decision.outcome == "submitted" else 1


def _history(client: RetrainingClient, args: argparse.Namespace, out: TextIO) -> int:
    decisions, more_decisions = paging.up_to(
        args.limit,
        lambda size, token: client.decisions_page(
            args.deployment, triggered_only=not args.all, limit=size, page_token=token
        ),
    )
    evaluations, more_evaluations = paging.up_to(
        args.limit, lambda size, token: client.evaluations_page(args.deployment, limit=size, page_token=token)
    )
    _print_history(decisions, evaluations, args.json, out)
    # Last, below both tables; each listing that was cut says so, as --limit bounds each apart.
    for more, what, count in (
        (more_decisions, "retraining decisions", len(decisions)),
        (more_evaluations, "evaluations", len(evaluations)),
    ):
        if more:
            paging.say_more(
                f"more {what} exist: these are the newest {count} (--limit); raise --limit for older ones"
            )
    return 0


def _print_history(
    decisions: list[pb.TriggerDecision], evaluations: list[pb.Evaluation], as_json: bool, out: TextIO
) -> None:
    if as_json:
        output.print_json(
            {
                "decisions": [output.to_jsonable(d) for d in decisions],
                "evaluations": [output.to_jsonable(e) for e in evaluations],
            },
            out,
        )
        return
    rows = [
        (
            output.timestamp(d.at_us),
            ",".join(d.rules) or "-",
            d.outcome,
            d.job_id or "-",
            "; ".join(d.reasons),
        )
        for d in decisions
    ]
    print(output.table(("AT", "RULES", "OUTCOME", "JOB", "REASONS"), rows), file=out)
    scored = [
        (
            output.timestamp(e.created_at_us),
            f"v{e.challenger_version} vs v{e.champion_version}",
            "pass" if e.passed else "fail",
            _versus(e.challenger_metrics.get(e.metric), e.champion_metrics.get(e.metric)),
            e.promotion_status or "-",
            e.promotion_reason,
        )
        for e in evaluations
    ]
    print(output.table(("AT", "CHALLENGER", "GATES", "METRIC", "PROMOTION", "WHY"), scored), file=out)


def _versus(ours: float | None, theirs: float | None) -> str:
    def show(value: float | None) -> str:
        return "-" if value is None else f"{value:.4g}"

    return f"{show(ours)} vs {show(theirs)}"
