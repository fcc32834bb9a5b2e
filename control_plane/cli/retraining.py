"""``aetherctl retrain trigger|configure|history``: retraining triggers and their outcomes from the command
line, through the SDK.

    aetherctl retrain configure churn --enable --schedule "0 3 * * 1" --drift \\
        --performance-threshold 0.8 --cooldown 6h --manual-approval
    aetherctl retrain trigger churn --reason "relabelled last month"
    aetherctl retrain history churn            # decisions, then evaluations with their promotion
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TextIO

from clients.aether.v1 import retraining_pb2 as pb
from clients.sdk.retraining import RetrainingClient
from control_plane.cli import output
from control_plane.cli.durations import duration_s
from control_plane.cli.settings import actor


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--control-plane", metavar="HOST:PORT", default=argparse.SUPPRESS, help="control plane address"
    )
    common.add_argument("--timeout", type=float, default=argparse.SUPPRESS, help="seconds per call")
    common.add_argument("--json", action="store_true", help="print JSON for scripts instead of tables")

    retrain = subparsers.add_parser("retrain", help="retraining triggers, evaluations and promotions")
    actions = retrain.add_subparsers(dest="action", required=True, metavar="ACTION")

    trigger = actions.add_parser("trigger", parents=[common], help="retrain a deployment's model now")
    trigger.add_argument("deployment", metavar="DEPLOYMENT")
    trigger.add_argument("--reason", default="", help="why (recorded in the decision and the audit log)")
    trigger.set_defaults(handler=_handler(_trigger))

    configure = actions.add_parser("configure", parents=[common], help="set a deployment's trigger rules")
    configure.add_argument("deployment", metavar="DEPLOYMENT")
    configure.add_argument("--enable", action="store_true", help="turn the automatic triggers on")
    configure.add_argument("--schedule", default="", help='cron expression, UTC (e.g. "0 3 * * 1")')
    configure.add_argument("--performance-metric", default="", help="default: the monitor's alert metric")
    configure.add_argument("--performance-threshold", type=float, help="retrain when past this value")
    configure.add_argument("--drift", action="store_true", help="data drift with a confirming signal")
    configure.add_argument("--drift-alone", action="store_true", help="data drift alone triggers")
    configure.add_argument("--new-labels", type=int, default=0, help="retrain after this many new labels")
    configure.add_argument("--cooldown", help="e.g. 30m, 6h, 1h30m (default 1h)")
    configure.add_argument("--entity-rows", default="", help="entity rows (Parquet) of the latest window")
    configure.add_argument("--min-rows", type=int, default=0, help="rows the window needs (default 100)")
    configure.add_argument("--max-rejected", type=float, default=0.0, help="invalid share allowed (0)")
    configure.add_argument("--gate-metric", default="", help="primary metric of the gates")
    configure.add_argument("--max-degradation", type=float, default=0.0, help="relative (default 0.005)")
    configure.add_argument("--latency-budget-ms", type=float, default=0.0, help="p95 ceiling; 0 = none")
    configure.add_argument("--manual-approval", action="store_true", help="a person approves challengers")
    configure.add_argument("--shadow", help="shadow phase before the canary, e.g. 30m")
    configure.add_argument("--min-agreement", type=float, default=0.0, help="shadow agreement needed")
    configure.set_defaults(handler=_handler(_configure))

    history = actions.add_parser("history", parents=[common], help="decisions and evaluations")
    history.add_argument("deployment", metavar="DEPLOYMENT")
    history.add_argument("--all", action="store_true", help="also decisions that did not retrain")
    history.add_argument("--limit", type=int, default=20, help="at most this many of each (%(default)s)")
    history.set_defaults(handler=_handler(_history))


def _handler(action: Callable[[RetrainingClient, argparse.Namespace, TextIO], int]) -> Callable[..., int]:
    def handle(args: argparse.Namespace) -> int:
        with RetrainingClient(args.control_plane, actor=actor(), timeout=args.timeout) as client:
            return action(client, args, sys.stdout)

    return handle


def config_from_args(args: argparse.Namespace) -> pb.TriggerConfig:
    config = pb.TriggerConfig(
        deployment=args.deployment,
        enabled=args.enable,
        schedule=args.schedule,
        performance_metric=args.performance_metric,
        drift=args.drift or args.drift_alone,
        drift_alone=args.drift_alone,
        new_labels=args.new_labels,
        entity_rows_path=args.entity_rows,
        min_rows=args.min_rows,
        max_rejected_fraction=args.max_rejected,
        gates=pb.EvaluationGates(
            metric=args.gate_metric,
            max_relative_degradation=args.max_degradation,
            latency_budget_ms=args.latency_budget_ms,
        ),
        promotion=pb.PromotionPolicy(
            manual_approval=args.manual_approval,
            shadow_seconds=duration_s(args.shadow, "--shadow") if args.shadow else 0.0,
            min_agreement=args.min_agreement,
        ),
    )
    if args.performance_threshold is not None:
        config.performance_threshold = args.performance_threshold
    if args.cooldown:
        config.cooldown_seconds = duration_s(args.cooldown, "--cooldown")
    return config


def _configure(client: RetrainingClient, args: argparse.Namespace, out: TextIO) -> int:
    stored = client.configure(args.deployment, config_from_args(args))
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
    decisions = client.decisions(args.deployment, triggered_only=not args.all, limit=args.limit)
    evaluations = client.evaluations(args.deployment, limit=args.limit)
    if args.json:
        output.print_json(
            {
                "decisions": [output.to_jsonable(d) for d in decisions],
                "evaluations": [output.to_jsonable(e) for e in evaluations],
            },
            out,
        )
        return 0
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
    return 0


def _versus(ours: float | None, theirs: float | None) -> str:
    def show(value: float | None) -> str:
        return "-" if value is None else f"{value:.4g}"

    return f"{show(ours)} vs {show(theirs)}"
