"""Monitor configs: defaults, validation and storage of one ``MonitorConfig`` per deployment.

Documented defaults (a deployment never configured gets all of them):

==========================  =====================================================================
test                        PSI, drift when PSI ≥ 0.2 (JSD ≥ 0.1; KS corrected p < 0.05;
                            Wasserstein / reference std ≥ 0.1); a KS threshold below 1, a JSD
                            one at most 1
correction (KS only)        Benjamini–Hochberg over the features of a window
drift_share                 0.3: the window drifts when ≥ 30 % of its scored features drift
window                      count, 1000 rows (time windows: 3600 s, at most 366 days)
min_samples                 30 finite values per feature, in the window and in the reference
task                        none (no quality metrics) — set it to get them
positive_class / threshold  1 / 0.5
performance windows         3600 s wide, tumbling (step = width, following it unless a step is
                            given: ``performance_step_set``); width and step 1 s to 366 days, the
                            width at most 1000 steps
min_labels                  50
alert_metric                accuracy (classification), mae (regression); no alert without a threshold
==========================  =====================================================================
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any
from urllib.parse import urlparse

from google.protobuf import json_format
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import monitoring_pb2 as pb
from clients.errors import FailedPrecondition, InvalidArgument
from control_plane.audit.log import record
from control_plane.db import read_session, write_session
from control_plane.db.models import NAME_LENGTH
from control_plane.db.upsert import insert_or_lock, next_revision
from control_plane.monitoring import webhooks
from control_plane.monitoring.tables import MonitorConfigRow
from control_plane.proto_enums import enum_problems

_log = logging.getLogger(__name__)

DEFAULT_THRESHOLDS: dict[int, float] = {
    pb.DRIFT_TEST_PSI: 0.2,
    pb.DRIFT_TEST_JSD: 0.1,
    pb.DRIFT_TEST_KS: 0.05,
    pb.DRIFT_TEST_WASSERSTEIN: 0.1,
}
DEFAULT_DRIFT_SHARE = 0.3
DEFAULT_WINDOW_ROWS = 1000
DEFAULT_WINDOW_SECONDS = 3600.0
DEFAULT_MIN_SAMPLES = 30
DEFAULT_POSITIVE_CLASS = 1
DEFAULT_DECISION_THRESHOLD = 0.5
DEFAULT_PERFORMANCE_WINDOW_SECONDS = 3600.0
DEFAULT_MIN_LABELS = 50
#: Bounds of a quality window's width and step. Below a second (1e-7 s rounds to 0 µs) a window has no
#: width and the monitor cannot compute one; past a year the figures no longer describe current quality
#: (and 1e300 s overflows the µs arithmetic).
MIN_PERFORMANCE_SECONDS = 1.0
MAX_PERFORMANCE_SECONDS = 366 * 24 * 3600.0
#: The most quality windows one read computes (a GetPerformance reply, a quality check).
MAX_WINDOWS = 2000
#: The widest a quality window may be, in steps. A range overlaps ``width / step`` windows more than its
#: own steps, so at ``width / step`` near :data:`MAX_WINDOWS` not even a one-second range could be read
#: (width 3600 s every 1 s: 3601 windows), and the quality check, cut to one read, failed on every pass.
#: Half the cap leaves every read at least 999 steps of range.
MAX_STEPS_PER_WIDTH = MAX_WINDOWS // 2
MAX_WINDOW_ROWS = 10_000_000
#: The longest time drift window: a year, as the quality windows. Only finite and positive before, so
#: ``1e13`` s was stored, its windows ended past the int64 µs a report holds, and every report of the
#: deployment failed until its windows were dropped after ``MAX_REPORT_ATTEMPTS``.
MAX_WINDOW_SECONDS = MAX_PERFORMANCE_SECONDS

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "auc")
REGRESSION_METRICS = ("mae", "rmse", "mape")
#: Metrics where a larger value is worse: they degrade *above* the alert threshold.
ERROR_METRICS = frozenset(REGRESSION_METRICS)


def effective(config: pb.MonitorConfig) -> pb.MonitorConfig:
    """A copy with every default filled in; ``InvalidArgument`` names the first invalid field."""
    out = pb.MonitorConfig()
    out.CopyFrom(config)
    if not out.deployment or len(out.deployment) > NAME_LENGTH:
        raise InvalidArgument("a monitor config needs a deployment name (at most 128 characters)")
    # Every enum field (test, correction, window_kind, task): an undefined number was stored, and every
    # drift window of the deployment then failed on it and was dropped.
    problems = enum_problems(out)
    if problems:
        _check(False, problems[0])
    if out.test == pb.DRIFT_TEST_UNSPECIFIED:
        out.test = pb.DRIFT_TEST_PSI
    if out.test not in DEFAULT_THRESHOLDS:
        raise InvalidArgument(f"unknown drift test {out.test}")
    if not out.HasField("threshold"):
        out.threshold = DEFAULT_THRESHOLDS[out.test]
    _check(math.isfinite(out.threshold) and out.threshold > 0, "threshold must be a positive number")
    if out.test == pb.DRIFT_TEST_KS:
        _check(out.threshold < 1, "a KS threshold is a significance level below 1")
    if out.test == pb.DRIFT_TEST_JSD:
        # The divergence (base 2) lies in [0, 1]: above 1 no feature could drift, and nothing said so.
        _check(
            out.threshold <= 1, f"a JSD threshold lies in (0, 1] (the divergence does), got {out.threshold:g}"
        )
    if out.correction == pb.MULTIPLE_TESTING_CORRECTION_UNSPECIFIED:
        out.correction = pb.MULTIPLE_TESTING_CORRECTION_BENJAMINI_HOCHBERG
    if not out.HasField("drift_share"):
        out.drift_share = DEFAULT_DRIFT_SHARE
    _check(0 < out.drift_share <= 1, "drift_share must lie in (0, 1]")
    if out.window_kind == pb.WINDOW_KIND_UNSPECIFIED:
        out.window_kind = pb.WINDOW_KIND_COUNT
    out.window_rows = out.window_rows or DEFAULT_WINDOW_ROWS
    _check(out.window_rows <= MAX_WINDOW_ROWS, f"window_rows must be at most {MAX_WINDOW_ROWS}")
    out.window_seconds = out.window_seconds or DEFAULT_WINDOW_SECONDS
    _check(
        0 < out.window_seconds <= MAX_WINDOW_SECONDS,  # False for NaN too
        f"window_seconds must lie in (0, {MAX_WINDOW_SECONDS:.0f}] (at most 366 days),"
        f" got {out.window_seconds:g}",
    )
    out.min_samples = out.min_samples or DEFAULT_MIN_SAMPLES
    if out.webhook_url:
        parsed = urlparse(out.webhook_url)
        _check(
            parsed.scheme in ("http", "https") and bool(parsed.netloc), "webhook_url must be an http(s) URL"
        )
    if not out.HasField("positive_class"):
        out.positive_class = DEFAULT_POSITIVE_CLASS
    if not out.HasField("decision_threshold"):
        out.decision_threshold = DEFAULT_DECISION_THRESHOLD
    _check(math.isfinite(out.decision_threshold), "decision_threshold must be finite")
    out.performance_window_seconds = out.performance_window_seconds or DEFAULT_PERFORMANCE_WINDOW_SECONDS
    # Whether the step was given is stored with it: filled in, a step set equal to the width looked like
    # the default, and a client re-sending the config (aetherctl monitor configure) let it follow the
    # next width change.
    out.performance_step_set = out.performance_step_seconds != 0
    out.performance_step_seconds = out.performance_step_seconds or out.performance_window_seconds
    _check(
        _performance_seconds(out.performance_window_seconds),
        f"performance_window_seconds must lie in [{MIN_PERFORMANCE_SECONDS:g}, {MAX_PERFORMANCE_SECONDS:.0f}]"
        f" (1 s to 366 days), got {out.performance_window_seconds:g}",
    )
    _check(
        _performance_seconds(out.performance_step_seconds)
        and out.performance_step_seconds <= out.performance_window_seconds,
        f"performance_step_seconds must lie in [{MIN_PERFORMANCE_SECONDS:g}, performance_window_seconds],"
        f" got {out.performance_step_seconds:g}",
    )
    _check(
        _us(out.performance_window_seconds) <= MAX_STEPS_PER_WIDTH * _us(out.performance_step_seconds),
        f"performance_window_seconds may be at most {MAX_STEPS_PER_WIDTH} performance_step_seconds (one"
        f" read computes at most {MAX_WINDOWS} windows), got {out.performance_window_seconds:g} s every"
        f" {out.performance_step_seconds:g} s: make the step at least"
        f" {out.performance_window_seconds / MAX_STEPS_PER_WIDTH:g} s",
    )
    out.min_labels = out.min_labels or DEFAULT_MIN_LABELS
    metrics = metric_names(out.task)
    if not out.alert_metric and metrics:
        out.alert_metric = metrics[0]
    if out.alert_metric:
        _check(out.alert_metric in metrics, f"alert_metric must be one of {list(metrics)} for this task")
    if out.HasField("alert_threshold"):
        _check(math.isfinite(out.alert_threshold), "alert_threshold must be finite")
        _check(bool(metrics), "an alert threshold needs a task (classification or regression)")
    return out


def metric_names(task: int) -> tuple[str, ...]:
    if task == pb.TASK_TYPE_CLASSIFICATION:
        return CLASSIFICATION_METRICS
    if task == pb.TASK_TYPE_REGRESSION:
        return REGRESSION_METRICS
    return ()


def performance_span_us(config: pb.MonitorConfig) -> tuple[int, int]:
    """(width, step) of ``config``'s quality windows in µs. A config stored before width and step were
    bounded may hold a span no window can be computed with: ``FailedPrecondition`` saying so. Only what
    cannot be computed is refused here (a step under 1 µs, a width past the maximum, a width of so many
    steps that no read of :data:`MAX_WINDOWS` windows holds a range of one step), so a sub-second window
    or a width of 1500 steps stored earlier keeps working."""
    width_us = _us(config.performance_window_seconds)
    step_us = _us(config.performance_step_seconds)
    if (
        not 1 <= step_us <= width_us <= MAX_PERFORMANCE_SECONDS * 1e6
        or max_range_us(width_us, step_us) < step_us
    ):
        raise FailedPrecondition(
            f"the monitor config of deployment {config.deployment!r} has quality windows of"
            f" {config.performance_window_seconds:g} s every {config.performance_step_seconds:g} s; configure"
            f" performance_window_seconds and performance_step_seconds within [{MIN_PERFORMANCE_SECONDS:g},"
            f" {MAX_PERFORMANCE_SECONDS:.0f}] s, the width at most {MAX_STEPS_PER_WIDTH} steps, again"
        )
    return width_us, step_us


def max_range_us(width_us: int, step_us: int) -> int:
    """The longest range (µs) whose overlapping windows of ``width_us`` every ``step_us`` number at most
    :data:`MAX_WINDOWS` however it is aligned: ``MAX_WINDOWS - ceil(width / step) - 1`` steps. At least
    999 steps for every config :func:`effective` accepts; not positive when none fits."""
    return (MAX_WINDOWS - -(-width_us // step_us) - 1) * step_us


def default_config(deployment: str) -> pb.MonitorConfig:
    return effective(pb.MonitorConfig(deployment=deployment))


def get_config(sessions: sessionmaker[Session], deployment: str) -> pb.MonitorConfig:
    """The stored config, or the defaults. ``FailedPrecondition`` for a stored config that holds an enum
    value its enum does not define (written before they were checked): see :func:`unusable`."""
    with read_session(sessions) as session:
        row = session.get(MonitorConfigRow, deployment)
        if row is None:
            return default_config(deployment)
        config = _from_row(row)
    problem = unusable(config)
    if problem is not None:
        raise FailedPrecondition(problem)
    return config


def configured(sessions: sessionmaker[Session]) -> dict[str, pb.MonitorConfig]:
    """Every stored config (effective), by deployment. A config that cannot be used (see :func:`unusable`)
    is returned disabled, and said so in an error logged once per stored version: the monitor then cuts
    no drift window for it and checks none of its quality windows. Scored, each window failed on the
    undefined value and was dropped, unseen but for one error per window; returned as stored or left
    out, the deployment would have been monitored by another config than the one stored (its
    defaults). Its predictions are still indexed, so labels join them once it is configured again."""
    with read_session(sessions) as session:
        rows = session.execute(select(MonitorConfigRow)).scalars().all()
        versions = {row.deployment: (_from_row(row), row.updated_at_us) for row in rows}
    found = {}
    for deployment, (config, updated_at_us) in versions.items():
        problem = unusable(config)
        if problem is not None:
            config.disabled = True
            _log_once((deployment, updated_at_us), problem)
        found[deployment] = config
    return found


def unusable(config: pb.MonitorConfig) -> str | None:
    """Why a *stored* config cannot be used, or None: one written before its enum fields were checked
    may hold a number its enum does not define (``correction: 999``), and one written before
    ``window_seconds`` was bounded a time window no report can hold (``1e13`` s ends past int64 µs); no
    report can be scored or stored with either. Checked on every read, since only a new config replaces it."""
    problems = enum_problems(config)
    if config.window_kind == pb.WINDOW_KIND_TIME and not 0 < config.window_seconds <= MAX_WINDOW_SECONDS:
        # Stored before window_seconds was bounded: no report can hold its windows (past int64 µs).
        problems.append(f"window_seconds {config.window_seconds:g} is not in (0, {MAX_WINDOW_SECONDS:.0f}]")
    if not problems:
        return None
    return (
        f"the stored monitor config of deployment {config.deployment!r} cannot be used: "
        f"{'; '.join(problems)}; replace it with ConfigureMonitor (MonitoringClient.configure;"
        " aetherctl monitor configure reads the stored config first, so it cannot)"
    )


def put_config(
    sessions: sessionmaker[Session],
    config: pb.MonitorConfig,
    *,
    actor: str,
    expected_revision: int | None = None,
) -> pb.MonitorConfig:
    """Validates, stores (replacing) and audits a deployment's config; returns the effective one, with the
    whole webhook URL (:func:`shown` is what a caller may see of it). With ``expected_revision``, only in
    place of the config of that revision (``Aborted`` otherwise, nothing written or audited: see
    :func:`~control_plane.db.upsert.next_revision`).

    A ``webhook_url`` in redacted form (what every reader gets: :mod:`.webhooks`) keeps the stored URL
    when it is that URL's redacted form, and is refused otherwise; so a client that sends back the config
    it read with one field changed leaves the webhook as it was. The audit entry holds the redacted form."""
    result = effective(config)
    result.updated_by = actor
    result.updated_at_us = time.time_ns() // 1000
    values = {
        "deployment": result.deployment,
        "config": _to_json(result),
        "updated_by": actor,
        "updated_at_us": result.updated_at_us,
    }
    with write_session(sessions) as session:
        # Locked, so that of concurrent replacements each audits the one before it as its "before", and
        # a redacted webhook is compared with the URL this replacement replaces.
        row, created = insert_or_lock(session, MonitorConfigRow, values)
        before = None if created else dict(row.config)
        # First: a stale write would otherwise be refused for a redacted webhook URL the caller never
        # sent (the redacted form of the URL it read, which another writer has replaced since).
        what = f"the monitor config of deployment {result.deployment!r}"
        result.revision = next_revision(before, expected_revision, what)
        # Refused here (rolling back the row just inserted, if any) rather than before the transaction:
        # the stored URL it stands for is only known under the lock.
        result.webhook_url = webhooks.kept(result.webhook_url, str((before or {}).get("webhook_url", "")))
        stored = _to_json(result)
        row.config, row.updated_by, row.updated_at_us = stored, actor, result.updated_at_us
        session.flush()
        record(
            session,
            actor=actor,
            action="monitoring.configure",
            object_type="deployment",
            object_id=result.deployment,
            before=None if before is None else _redacted_json(before),
            after=_redacted_json(stored),
        )
    return result


def shown(config: pb.MonitorConfig) -> pb.MonitorConfig:
    """``config`` as a caller may see it: a copy with its webhook URL redacted (:mod:`.webhooks`). Every
    reply of the Monitoring service passes its config through this, to every token, admin included: the
    URL is write-only, since it is often a credential and a client never needs it back (sending back the
    redacted form keeps it: :func:`put_config`)."""
    out = pb.MonitorConfig()
    out.CopyFrom(config)
    out.webhook_url = webhooks.redact_webhook(config.webhook_url)
    return out


def _redacted_json(state: dict[str, Any]) -> dict[str, Any]:
    """A stored config's JSON with its webhook URL redacted, for the audit log (read by the read-only
    token through QueryAudit and kept for good in the hash chain)."""
    url = state.get("webhook_url")
    if not isinstance(url, str) or not url:
        return state
    return {**state, "webhook_url": webhooks.redact_webhook(url)}


def _from_row(row: MonitorConfigRow) -> pb.MonitorConfig:
    config = json_format.ParseDict(row.config, pb.MonitorConfig(), ignore_unknown_fields=True)
    # Stored before performance_step_set: a step apart from its width can only have been given.
    if config.performance_step_seconds != config.performance_window_seconds:
        config.performance_step_set = True
    return config


def _to_json(config: pb.MonitorConfig) -> dict[str, Any]:
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def _performance_seconds(value: float) -> bool:
    return MIN_PERFORMANCE_SECONDS <= value <= MAX_PERFORMANCE_SECONDS  # False for NaN too


def _us(seconds: float) -> int:
    return round(seconds * 1e6) if math.isfinite(seconds) else 0


_logged: set[tuple[str, int]] = set()
_logged_lock = threading.Lock()


def _log_once(key: tuple[str, int], problem: str) -> None:
    """Logs ``problem`` of the stored config ``key`` (deployment, updated at) once per process: the
    monitor reads every config on each tick, twice a second by default."""
    with _logged_lock:
        if key in _logged:
            return
        _logged.add(key)
    _log.error("%s; its drift windows and quality alerts are off until then", problem)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidArgument(f"invalid monitor config: {message}")
