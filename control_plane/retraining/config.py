"""Trigger configs: defaults, validation, storage of one ``TriggerConfig`` per deployment, and the pure
rules and gates derived from it.

Documented defaults (a deployment never configured is disabled):

==============================  ======================================================================
cooldown_seconds                3600 (0 to 366 days)
performance_metric              the deployment's monitor alert metric (accuracy / mae); a metric of the
                                monitor's task (any monitor metric while the monitor has no task)
data_window_seconds             604800 (7 days of offline rows validated before training; 1 s to 366 days)
max_rejected_fraction           0 (one invalid row blocks the retraining)
min_rows                        100
gates.metric                    the performance metric (checked as performance_metric)
gates.max_relative_degradation  0.005 (challenger ≥ champion − 0.5 % of the champion's value)
gates.max_latency_ratio         1.5 (challenger p95 ≤ 1.5 × champion p95; finite, < 0 = no ratio gate)
gates.min_holdout_rows          50
gates.holdout_seconds           86400 (1 s to 366 days)
==============================  ======================================================================
"""

from __future__ import annotations

import math
import time
from typing import Any

from google.protobuf import json_format
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import monitoring_pb2 as mpb
from clients.aether.v1 import retraining_pb2 as pb
from clients.errors import FailedPrecondition, InvalidArgument
from control_plane.audit.log import record
from control_plane.db import read_session, write_session
from control_plane.db.models import NAME_LENGTH
from control_plane.db.upsert import check_revision, insert_or_lock, next_revision
from control_plane.deployments.messages import policy_from_proto
from control_plane.monitoring import config as monitor_configs
from control_plane.monitoring.config import (
    CLASSIFICATION_METRICS,
    ERROR_METRICS,
    REGRESSION_METRICS,
    metric_names,
)
from control_plane.retraining import cron
from control_plane.retraining.evaluation import Gates
from control_plane.retraining.tables import RetrainingConfigRow
from control_plane.retraining.triggers import TriggerRules

DEFAULT_COOLDOWN_S = 3600.0
DEFAULT_DATA_WINDOW_S = 7 * 24 * 3600.0
DEFAULT_MIN_ROWS = 100
DEFAULT_MAX_RELATIVE_DEGRADATION = 0.005
DEFAULT_MAX_LATENCY_RATIO = 1.5
DEFAULT_MIN_HOLDOUT_ROWS = 50
DEFAULT_HOLDOUT_S = 24 * 3600.0
#: Bounds of the data window and the holdout, as the monitor bounds its windows: a span of 1e11 s made
#: TriggerNow raise OverflowError (INTERNAL) on every tick, and one of 1e14 s an int64 past SQLite's.
MIN_SPAN_S, MAX_SPAN_S = 1.0, 366 * 24 * 3600.0


def effective(config: pb.TriggerConfig, default_metric: str = "") -> pb.TriggerConfig:
    """A copy with every default filled in; ``InvalidArgument`` names the first invalid field."""
    out = pb.TriggerConfig()
    out.CopyFrom(config)
    if not out.deployment or len(out.deployment) > NAME_LENGTH:
        raise InvalidArgument("a trigger config needs a deployment name (at most 128 characters)")
    if out.schedule:
        out.schedule = cron.parse(out.schedule).expression
    if not out.HasField("cooldown_seconds"):
        out.cooldown_seconds = DEFAULT_COOLDOWN_S
    # Bounded as the spans are: a cooldown of 1e12 s was stored, and its end (past year 9999) raised in
    # every tick after the deployment's first trigger, which then decided nothing.
    _check(
        0 <= out.cooldown_seconds <= MAX_SPAN_S,  # False for NaN too
        f"cooldown_seconds must lie in [0, {MAX_SPAN_S:.0f}] (up to 366 days), got {out.cooldown_seconds:g}",
    )
    if not out.performance_metric:
        out.performance_metric = default_metric
    if out.HasField("performance_threshold"):
        _check(_finite(out.performance_threshold), "performance_threshold must be a finite number")
    out.data_window_seconds = out.data_window_seconds or DEFAULT_DATA_WINDOW_S
    _check_span("data_window_seconds", out.data_window_seconds)
    _check(0 <= out.max_rejected_fraction <= 1, "max_rejected_fraction must lie in [0, 1]")
    out.min_rows = out.min_rows or DEFAULT_MIN_ROWS
    gates = out.gates
    gates.metric = gates.metric or out.performance_metric
    gates.max_relative_degradation = gates.max_relative_degradation or DEFAULT_MAX_RELATIVE_DEGRADATION
    _check(0 <= gates.max_relative_degradation < 1, "gates.max_relative_degradation must lie in [0, 1)")
    _check(_finite(gates.latency_budget_ms) and gates.latency_budget_ms >= 0, "gates.latency_budget_ms >= 0")
    gates.max_latency_ratio = gates.max_latency_ratio or DEFAULT_MAX_LATENCY_RATIO
    # NaN compared false everywhere and so turned the gate off unseen; < 0 turns it off on purpose.
    _check(_finite(gates.max_latency_ratio), "gates.max_latency_ratio must be a finite number (< 0 = none)")
    gates.min_holdout_rows = gates.min_holdout_rows or DEFAULT_MIN_HOLDOUT_ROWS
    gates.holdout_seconds = gates.holdout_seconds or DEFAULT_HOLDOUT_S
    _check_span("gates.holdout_seconds", gates.holdout_seconds)
    promotion = out.promotion
    _check(_finite(promotion.shadow_seconds) and promotion.shadow_seconds >= 0, "shadow_seconds must be >= 0")
    _check(0 <= promotion.min_agreement <= 1, "promotion.min_agreement must lie in [0, 1]")
    if promotion.HasField("canary"):
        _check_canary(promotion.canary)
    return out


def _check_canary(policy: dpb.CanaryPolicy) -> None:
    """The deployments core's own check of the policy it is handed when the canary starts: refused only
    then, after the gates passed, the challenger was left pending for ever."""
    try:
        policy_from_proto(policy)
    except InvalidArgument as exc:
        raise InvalidArgument(f"promotion.canary: {exc}") from exc


def check_metrics(config: pb.TriggerConfig, task: int) -> None:
    """The performance and gate metrics are metrics the monitor computes for ``task`` (or for any task
    while it has none). A misspelt one was stored: the performance rule never fired, and every
    challenger failed its gates as "undefined on the holdout"."""
    known = metric_names(task) or CLASSIFICATION_METRICS + REGRESSION_METRICS
    for field, name in (
        ("performance_metric", config.performance_metric),
        ("gates.metric", config.gates.metric),
    ):
        _check(
            not name or name in known,
            f"{field} {name!r} is not a metric of the deployment's monitor; use one of {list(known)}",
        )


def gates_unscorable(config: pb.TriggerConfig, monitor: mpb.MonitorConfig) -> str | None:
    """Why a challenger could not be judged under ``config`` (its defaults filled in from ``monitor``),
    or None. Without a monitor task the gates compute no metric, and without a gate metric they compare
    nothing: each challenger retrained failed "challenger  is undefined on the holdout" and was Rejected
    in the registry for good."""
    name = config.deployment
    if monitor.task == mpb.TASK_TYPE_UNSPECIFIED:
        return (
            f"the monitor of deployment {name!r} has no task, so the gates compute no metric: set it first "
            f"(aetherctl monitor configure {name} --task classification|regression)"
        )
    if not config.gates.metric:
        return f"deployment {name!r} has no gate metric: set gates.metric or performance_metric"
    return None


def rules_of(config: pb.TriggerConfig) -> TriggerRules:
    return TriggerRules(
        schedule=cron.parse(config.schedule) if config.schedule else None,
        performance_metric=config.performance_metric,
        performance_threshold=(
            config.performance_threshold if config.HasField("performance_threshold") else None
        ),
        error_metric=config.performance_metric in ERROR_METRICS,
        drift=config.drift,
        drift_alone=config.drift_alone,
        new_labels=config.new_labels,
        cooldown_s=config.cooldown_seconds,
    )


def gates_of(config: pb.TriggerConfig) -> Gates:
    gates = config.gates
    return Gates(
        metric=gates.metric,
        error_metric=gates.metric in ERROR_METRICS,
        max_relative_degradation=gates.max_relative_degradation,
        latency_budget_ms=gates.latency_budget_ms,
        max_latency_ratio=gates.max_latency_ratio if gates.max_latency_ratio > 0 else 0.0,
        min_rows=gates.min_holdout_rows,
    )


def put_config(
    sessions: sessionmaker[Session],
    config: pb.TriggerConfig,
    *,
    actor: str,
    expected_revision: int | None = None,
) -> pb.TriggerConfig:
    """Stores ``config`` (with its defaults) in place of the deployment's previous one; audited. With
    ``expected_revision``, only in place of the config of that revision (``Aborted`` otherwise, nothing
    written or audited: see :func:`~control_plane.db.upsert.next_revision`). The
    metrics named must be among the metrics of the deployment's monitor task; an enabled config needs a
    monitor task and a gate metric (``FailedPrecondition`` says what to set, see :func:`gates_unscorable`).

    An empty performance metric (and a gates' metric left to follow it) is stored empty, not as the
    monitor's current alert metric: stored filled in, it stopped following the monitor, whose task or
    alert metric could change later (the loop fills it in on every pass)."""
    stored = effective(config)
    previous = get_config(sessions, stored.deployment)
    # Stale first: the checks below compare with the stored config, which a stale caller never read, so
    # its change would be refused for the other writer's values (INVALID_ARGUMENT, never retried) rather
    # than ABORTED and re-applied. Compared again under the row lock below.
    check_revision(previous.revision, expected_revision, _what(stored.deployment))
    monitor = monitor_configs.get_config(sessions, stored.deployment)
    checked = effective(config, monitor.alert_metric)
    problem = gates_unscorable(checked, monitor) if stored.enabled else None
    if problem is not None:
        raise FailedPrecondition(f"retraining cannot be enabled: {problem}")
    unchanged = (stored.performance_metric, stored.gates.metric) == (
        previous.performance_metric,
        previous.gates.metric,
    )
    if stored.enabled or not unchanged:
        # A disabled config whose metrics are the ones stored triggers nothing: it must stay possible to
        # disable a config whose metric the monitor's task no longer computes (the task changed later).
        check_metrics(checked, monitor.task)
    stored.updated_by = actor
    stored.updated_at_us = time.time_ns() // 1000
    values = {
        "deployment": stored.deployment,
        "config": _to_json(stored),
        "updated_by": actor,
        "updated_at_us": stored.updated_at_us,
    }
    with write_session(sessions) as session:
        # Locked, so that of concurrent replacements each audits the one before it as its "before", and
        # the expected revision is compared with the one this replacement replaces.
        row, created = insert_or_lock(session, RetrainingConfigRow, values)
        before = None if created else dict(row.config)
        stored.revision = next_revision(before, expected_revision, _what(stored.deployment))
        state = _to_json(stored)
        row.config, row.updated_by, row.updated_at_us = state, actor, stored.updated_at_us
        record(
            session,
            actor=actor,
            action="configure" if before is not None else "create",
            object_type="retraining_config",
            object_id=stored.deployment,
            before=before,
            after=state,
        )
    return stored


def get_config(sessions: sessionmaker[Session], deployment: str) -> pb.TriggerConfig:
    """The stored config, or the (disabled) defaults."""
    with read_session(sessions) as session:
        row = session.get(RetrainingConfigRow, deployment)
        if row is None:
            return effective(pb.TriggerConfig(deployment=deployment))
        return json_format.ParseDict(row.config, pb.TriggerConfig(), ignore_unknown_fields=True)


def has_config(sessions: sessionmaker[Session], deployment: str) -> bool:
    """Whether a config is stored for ``deployment`` (one deleted since keeps its config)."""
    with read_session(sessions) as session:
        return session.get(RetrainingConfigRow, deployment) is not None


def enabled_configs(sessions: sessionmaker[Session]) -> list[pb.TriggerConfig]:
    with read_session(sessions) as session:
        rows = session.execute(select(RetrainingConfigRow).order_by(RetrainingConfigRow.deployment)).scalars()
        configs = [
            json_format.ParseDict(r.config, pb.TriggerConfig(), ignore_unknown_fields=True) for r in rows
        ]
    return [c for c in configs if c.enabled]


def _to_json(config: pb.TriggerConfig) -> dict[str, Any]:
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def _check_span(field: str, seconds: float) -> None:
    _check(
        MIN_SPAN_S <= seconds <= MAX_SPAN_S,  # False for NaN too
        f"{field} must lie in [{MIN_SPAN_S:g}, {MAX_SPAN_S:.0f}] (1 s to 366 days), got {seconds:g}",
    )


def _finite(value: float) -> bool:
    return math.isfinite(value)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InvalidArgument(message)


def _what(deployment: str) -> str:
    return f"the trigger config of deployment {deployment!r}"
