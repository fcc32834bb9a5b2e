"""The flags of ``aetherctl retrain configure`` and how they change a deployment's trigger config.

Like ``monitor configure``, it changes only the fields given as flags: it reads the effective config and
sends it back with those fields replaced (the ConfigureTriggers RPC replaces the whole config, so sending
only the flags given used to disable retraining and wipe the schedule, rules and gates of a deployment
whose cooldown alone was changed). Every switch has an opposite (``--enable``/``--disable``,
``--drift``/``--no-drift``, ...), a text flag set to "" returns its field to the documented default (as 0
does for the numbers whose help says so), and ``--no-performance-rule`` removes the performance threshold.
"""

from __future__ import annotations

import argparse
from typing import Any

from clients.aether.v1 import retraining_pb2 as pb
from control_plane.cli.durations import duration_s
from control_plane.cli.errors import UsageError
from control_plane.cli.numbers import uint64

# Flag destination -> TriggerConfig field path; their values go in as argparse typed them.
_PLAIN = {
    "enabled": "enabled",
    "schedule": "schedule",
    "performance_metric": "performance_metric",
    "performance_threshold": "performance_threshold",
    "new_labels": "new_labels",
    "entity_rows": "entity_rows_path",
    "min_rows": "min_rows",
    "max_rejected": "max_rejected_fraction",
    "gate_metric": "gates.metric",
    "max_degradation": "gates.max_relative_degradation",
    "latency_budget_ms": "gates.latency_budget_ms",
    "manual_approval": "promotion.manual_approval",
    "min_agreement": "promotion.min_agreement",
}
DESCRIPTION = (
    "Change the given fields of a deployment's retraining triggers; every field not given keeps its value."
    ' A text flag set to "" returns its field to the default, as 0 does where a flag\'s help says so, and'
    " each switch has its opposite (--disable, --no-drift, --no-manual-approval, --no-performance-rule)."
)
_DURATIONS = {"cooldown": "cooldown_seconds", "shadow": "promotion.shadow_seconds"}
_SERVER_SET = ("deployment", "updated_by", "updated_at_us", "revision")


def add_arguments(configure: argparse.ArgumentParser) -> None:
    state = configure.add_mutually_exclusive_group()
    state.add_argument(
        "--enable", dest="enabled", action="store_const", const=True, help="turn the automatic triggers on"
    )
    state.add_argument(
        "--disable", dest="enabled", action="store_const", const=False, help="turn them off (manual only)"
    )
    configure.add_argument("--schedule", help='cron expression, UTC (e.g. "0 3 * * 1"; "" = none)')
    configure.add_argument("--performance-metric", help='"" = the monitor\'s alert metric')
    threshold = configure.add_mutually_exclusive_group()
    threshold.add_argument("--performance-threshold", type=float, help="retrain when past this value")
    threshold.add_argument(
        "--no-performance-rule", action="store_true", help="remove the performance threshold"
    )
    switch = argparse.BooleanOptionalAction  # --x sets, --no-x clears, neither leaves it
    configure.add_argument("--drift", action=switch, help="data drift with a confirming signal triggers")
    configure.add_argument("--drift-alone", action=switch, help="data drift alone triggers (implies --drift)")
    configure.add_argument("--new-labels", type=uint64, help="retrain after this many new labels (0 = no)")
    configure.add_argument("--cooldown", help="between automatic triggers, e.g. 30m, 6h, 1h30m (default 1h)")
    configure.add_argument(
        "--entity-rows", help='entity rows (Parquet) of the latest window ("" = the spec\'s)'
    )
    configure.add_argument("--min-rows", type=uint64, help="rows the window needs (0 = default 100)")
    configure.add_argument("--max-rejected", type=float, help="invalid share allowed (default 0)")
    configure.add_argument("--gate-metric", help='primary metric of the gates ("" = the performance metric)')
    configure.add_argument("--max-degradation", type=float, help="relative (0 = default 0.005)")
    configure.add_argument("--latency-budget-ms", type=float, help="p95 ceiling (0 = none)")
    configure.add_argument("--manual-approval", action=switch, help="a person approves challengers")
    configure.add_argument("--shadow", help="shadow phase before the canary, e.g. 30m (0 = none)")
    configure.add_argument("--min-agreement", type=float, help="shadow agreement needed (0 = measured only)")


def changes(args: argparse.Namespace) -> dict[str, Any]:
    """TriggerConfig field path -> new value (None: clear the field) for every flag given. Raises
    UsageError for a malformed or contradictory value, so call it before asking the server anything."""
    fields = {path: getattr(args, flag) for flag, path in _PLAIN.items() if getattr(args, flag) is not None}
    for flag, path in _DURATIONS.items():
        if getattr(args, flag) is not None:
            fields[path] = float(duration_s(getattr(args, flag), f"--{flag}"))
    if args.no_performance_rule:
        fields["performance_threshold"] = None
    drift, alone = args.drift, args.drift_alone
    if drift is False and alone:
        raise UsageError("--no-drift contradicts --drift-alone")
    if alone:
        drift = True  # drift alone is a kind of drift rule
    if drift is False:
        alone = False  # drift alone without drift would be a rule that never fires
    fields.update({k: v for k, v in (("drift", drift), ("drift_alone", alone)) if v is not None})
    return fields


def merged(current: pb.TriggerConfig, fields: dict[str, Any]) -> pb.TriggerConfig:
    """``current`` with ``fields`` (from :func:`changes`) replaced, ready to send back."""
    config = pb.TriggerConfig()
    config.CopyFrom(current)
    for name in _SERVER_SET:
        config.ClearField(name)
    # The server fills the gates' metric in from the performance metric when none is given, so a gates'
    # metric equal to the old performance metric follows it to a new one (the server fills it in again).
    following = current.gates.metric == current.performance_metric
    if following and "performance_metric" in fields and "gates.metric" not in fields:
        fields = {**fields, "gates.metric": ""}
    for path, value in fields.items():
        *parents, name = path.split(".")
        message: Any = config
        for parent in parents:
            message = getattr(message, parent)
        if value is None:
            message.ClearField(name)
        else:
            setattr(message, name, value)
    return config
