"""The retraining trigger as a pure step function: rules + observations in, one decision out.

:func:`decide` looks at what the loop observed for one deployment since its previous tick and answers
whether to retrain, with the rules that fired and a reason for each (or the reasons it did not).

Rules (each off unless configured):

* **schedule** — a minute matching the cron expression started in ``(previous_tick_us, now_us]``;
* **performance** — the newest complete quality window with enough labels is past the threshold (below
  it; above it for error metrics such as MAE), or some of its labelled predictions were unusable (missing
  or not finite numbers: a model answering NaN), as the monitor's DEGRADED has it. A model answering NaN
  on every row has no metric at all, and read as "no degradation" it was the one failure never retrained;
* **drift** — the newest drift report drifted, *combined* with a performance degradation or, while
  labels are still missing, the proxy signal of prediction drift; data drift on its own triggers only
  with ``drift_alone``;
* **labels** — at least ``new_labels`` labels arrived since the last trigger;
* **manual** — a person asked (``TriggerNow``).

Guards, in order: nothing triggers while a retraining job of the deployment is still running, nor while
the promotion of its previous challenger is in progress (not started yet, awaiting approval, pending,
in shadow or in canary: until it is promoted, rolled back, rejected or failed), nor while another
deployment serving the same model retrains it (its job runs or its challenger's promotion is in progress:
``held_by``, since the model has one ``challenger`` alias); automatic rules wait out
``cooldown_s`` after the last trigger (a manual request skips the cooldown), the schedule counting from
the start of the last trigger's minute, since it matches minutes (an hourly schedule with a one-hour
cooldown fires every hour, where the tick's seconds into its minute made it skip every other one by
chance); and only signals from
windows that ended after the last trigger, and by ``now_us``, count, so one degraded window triggers once
(a window still in progress would end after every trigger, and fire after every cooldown); nor do windows
that started before a retraining's promotion made the serving champion (``champion_since_us``): they judged
the model it replaced.

A trigger refused by the first three guards is not lost for the rules that count since the last trigger:
the quality windows and drift reports that ended since then stay fresh, and the labels keep adding up,
so they trigger at the first tick after the guard lifts. A schedule's cron minute is the exception: it
fires in the tick its minute falls in, and a guard in that tick skips it. A manual request is answered
with the refusal; the person asks again once the guard lifts. Before the promotion guard, a retraining
triggered while a challenger waited for a reviewer, and the new challenger took the ``challenger`` alias
(:mod:`.promotion`): approved next, the first one entered the canary while the alias named the other.
The same happened across two deployments of one model (staging and production, two regions): the alias
is the model's, and the other deployment's challenger took it from the one awaiting its reviewer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from control_plane.retraining.cron import CronSchedule

#: The running-job guard's reason (also given by :func:`.records.add_submitting`, which checks it again).
STILL_RUNNING = "a retraining job of this deployment is still running"


def still_promoting(promotion: str, deployment: str = "") -> str:
    """The promotion guard's reason (also given by :func:`.records.add_submitting`); ``promotion`` names
    the challenger and its status, e.g. ``"eta v7 (awaiting_approval)"``; ``deployment`` the other
    deployment of the model that is promoting it ("": this deployment). Stable while the status is, so
    that the loop stores one such decision per status, not one per tick."""
    if not deployment:
        return (
            f"the promotion of challenger {promotion} on this deployment is still in progress: no retraining "
            "until it ends (promoted, rolled back, rejected or failed)"
        )
    return (
        f"the promotion of challenger {promotion} on deployment {deployment!r}, which serves the same model,"
        " is still in progress: no retraining until it ends (promoted, rolled back, rejected or failed), as"
        f" the model has one {_ALIAS!r} alias"
    )


def running_elsewhere(model: str, deployment: str) -> str:
    """The reason a deployment does not retrain while a retraining job of its model, for ``deployment``
    (another deployment serving it), still runs: the two challengers would take the model's one
    ``challenger`` alias from each other. Stable, as :func:`still_promoting` is."""
    return (
        f"a retraining job of model {model!r} for deployment {deployment!r}, which serves the same model, is"
        f" still running: no retraining until its challenger's promotion ends, as the model has one"
        f" {_ALIAS!r} alias"
    )


#: The model's alias naming the version whose promotion is in progress (:data:`.promotion.CHALLENGER`,
#: which this module cannot import: promotion imports the records that import it).
_ALIAS = "challenger"


SCHEDULE = "schedule"
PERFORMANCE = "performance"
DRIFT = "drift"
LABELS = "labels"
MANUAL = "manual"
_MINUTE_US = 60_000_000
#: The last day a cooldown's end can be written as a date.
_LAST_DATE_S = dt.datetime(9999, 12, 31, tzinfo=dt.UTC).timestamp()


@dataclass(frozen=True)
class TriggerRules:
    schedule: CronSchedule | None = None
    performance_metric: str = ""
    performance_threshold: float | None = None
    #: True when a larger value of the metric is worse (MAE, RMSE, MAPE).
    error_metric: bool = False
    drift: bool = False
    drift_alone: bool = False
    new_labels: int = 0
    cooldown_s: float = 3600.0


@dataclass(frozen=True)
class PerformanceObservation:
    """One complete quality window that held enough labels."""

    end_us: int
    metrics: dict[str, float]
    n_labels: int = 0
    #: Labelled predictions left out of the metrics: missing, or not finite numbers.
    n_invalid_predictions: int = 0
    start_us: int = 0


@dataclass(frozen=True)
class DriftObservation:
    end_us: int
    data_drift: bool
    prediction_drift: bool
    drifted_share: float = 0.0
    start_us: int = 0


@dataclass(frozen=True)
class ManualRequest:
    actor: str
    reason: str = ""


@dataclass(frozen=True)
class Observations:
    now_us: int
    #: The previous tick (the schedule's window starts there); 0 = first tick (the schedule waits one).
    previous_tick_us: int = 0
    #: When this deployment last triggered a retraining; 0 = never.
    last_triggered_us: int = 0
    #: When a retraining's promotion last made a new champion serve the deployment; 0 = never. Windows
    #: that started before it judged the model it replaced.
    champion_since_us: int = 0
    retraining_running: bool = False
    #: The deployment's challenger whose promotion is in progress, with its status (see
    #: :func:`still_promoting`); "" = none.
    promotion_in_progress: str = ""
    #: Why another deployment serving the same model holds this one's retraining (its job runs, or its
    #: challenger's promotion is in progress: :func:`running_elsewhere`, :func:`still_promoting`); "" = none.
    held_by: str = ""
    performance: Sequence[PerformanceObservation] = ()
    drift: Sequence[DriftObservation] = ()
    new_labels: int = 0
    manual: ManualRequest | None = None


@dataclass(frozen=True)
class Decision:
    triggered: bool
    rules: tuple[str, ...] = ()
    reasons: tuple[str, ...] = field(default_factory=tuple)


def decide(rules: TriggerRules, seen: Observations) -> Decision:
    """Whether to retrain now (see the module doc for the rules and guards)."""
    if seen.retraining_running:
        return Decision(False, (), (STILL_RUNNING,))
    if seen.promotion_in_progress:
        return Decision(False, (), (still_promoting(seen.promotion_in_progress),))
    if seen.held_by:
        return Decision(False, (), (seen.held_by,))
    if seen.manual is not None:
        why = f"manual trigger by {seen.manual.actor}" + (
            f": {seen.manual.reason}" if seen.manual.reason else ""
        )
        return Decision(True, (MANUAL,), (why,))
    cooling = bool(seen.last_triggered_us) and seen.now_us - seen.last_triggered_us < rules.cooldown_s * 1e6
    scheduled = _schedule_fires(rules, seen, cooling)
    if cooling and not scheduled:
        # Stable text (no countdown), so that the loop stores one such decision, not one per tick.
        return Decision(
            False, (), (f"cooldown of {rules.cooldown_s:g} s until {_cooldown_end(rules, seen)}",)
        )
    if cooling and rules.schedule is not None:  # only the schedule's cooldown runs from a minute
        return Decision(True, (SCHEDULE,), (f"schedule {rules.schedule.expression!r} matched",))
    fired: list[str] = []
    reasons: list[str] = []
    quiet: list[str] = []

    def note(rule: str, fires: bool, why: str) -> None:
        if fires:
            fired.append(rule)
            reasons.append(why)
        else:
            quiet.append(why)

    if rules.schedule is not None:
        note(
            SCHEDULE,
            scheduled,
            f"schedule {rules.schedule.expression!r} " + ("matched" if scheduled else "not due"),
        )
    degraded = _degradation(rules, seen)
    if rules.performance_threshold is not None:
        note(PERFORMANCE, degraded is not None, degraded or "performance within threshold")
    if rules.drift:
        fires, why = _drift(rules, seen, degraded)
        note(DRIFT, fires, why)
    if rules.new_labels > 0:
        fires = seen.new_labels >= rules.new_labels
        text = f"{seen.new_labels} new labels" if fires else f"fewer than {rules.new_labels} new labels"
        note(LABELS, fires, text + f" (rule: {rules.new_labels})")
    if fired:
        return Decision(True, tuple(fired), tuple(reasons))
    return Decision(False, (), tuple(quiet) or ("no trigger rule is configured",))


def _schedule_fires(rules: TriggerRules, seen: Observations, cooling: bool) -> bool:
    """Whether a cron minute started since the previous tick (never on a deployment's first tick). In a
    cooldown, only a minute starting a full cooldown after the start of the last trigger's minute counts:
    a schedule is a series of minutes, and measured from the tick (some seconds into its minute), an
    hourly schedule's next minute came a few seconds short of a one-hour cooldown, by chance, and the
    schedule skipped every other hour. The last trigger's own minute never fires again (cooldown > 0)."""
    if rules.schedule is None or seen.previous_tick_us <= 0:
        return False
    after = seen.previous_tick_us
    if cooling:
        trigger_minute_us = seen.last_triggered_us // _MINUTE_US * _MINUTE_US
        after = max(after, trigger_minute_us + int(rules.cooldown_s * 1e6) - 1)
    return rules.schedule.fires_between(after, seen.now_us)


def _cooldown_end(rules: TriggerRules, seen: Observations) -> str:
    """When the cooldown ends (UTC). A config stored before cooldowns were bounded can end past the
    calendar (year 9999): formatting it raised, and every tick after a trigger decided nothing."""
    end_s = (seen.last_triggered_us + rules.cooldown_s * 1e6) / 1e6
    if end_s >= _LAST_DATE_S:
        return "after 9999-12-31"
    return f"{dt.datetime.fromtimestamp(end_s, dt.UTC):%Y-%m-%dT%H:%M:%SZ}"


def _fresh_performance(seen: Observations) -> PerformanceObservation | None:
    newer = [w for w in seen.performance if _fresh(seen, w.start_us, w.end_us)]
    return max(newer, key=lambda w: w.end_us) if newer else None


def _fresh_drift(seen: Observations) -> DriftObservation | None:
    # A drift report can end after now too: a count window ends at its latest row's prediction time, which
    # a data plane whose clock runs ahead puts in the future. Such a report ends after every trigger.
    newer = [r for r in seen.drift if _fresh(seen, r.start_us, r.end_us)]
    return max(newer, key=lambda r: r.end_us) if newer else None


def _fresh(seen: Observations, start_us: int, end_us: int) -> bool:
    """Whether a window from ``start_us`` to ``end_us`` counts now: it ended after the last trigger, and by
    now (a window ending later would end after every trigger too, and fire again after every cooldown),
    and started once the serving champion did (the windows of the model it replaced, degraded since the
    trigger that retrained it, retrained the new champion at the first tick after its promotion)."""
    return seen.last_triggered_us < end_us <= seen.now_us and start_us >= seen.champion_since_us


def _degradation(rules: TriggerRules, seen: Observations) -> str | None:
    """Why the newest fresh quality window is degraded, or None: its metric is past the threshold, or
    some labelled prediction was unusable (the rule of :func:`control_plane.monitoring.performance.degraded`,
    so that a window the monitor alerts on retrains too)."""
    if rules.performance_threshold is None:
        return None
    window = _fresh_performance(seen)
    if window is None:
        return None
    metric, threshold = rules.performance_metric, rules.performance_threshold
    value = window.metrics.get(metric)
    unusable = (
        f"{window.n_invalid_predictions} of {window.n_labels} labelled predictions were unusable "
        "(missing or not finite)"
        if window.n_invalid_predictions
        else ""
    )
    if value is not None and (value > threshold if rules.error_metric else value < threshold):
        side = "above" if rules.error_metric else "below"
        past = f"{metric} {value:.4g} {side} threshold {threshold:.4g}"
        return f"{past}; {unusable}" if unusable else past
    if not unusable:
        return None  # within the threshold, or undefined on usable predictions (no positive class seen)
    scored = f"{metric} undefined" if value is None else f"{metric} {value:.4g} on the others"
    return f"{unusable}; {scored}"


def _drift(rules: TriggerRules, seen: Observations, degraded: str | None) -> tuple[bool, str]:
    report = _fresh_drift(seen)
    if report is None or not report.data_drift:
        return False, "no data drift"
    drifted = f"data drift ({report.drifted_share:.0%} of features)"
    if degraded is not None:
        return True, f"{drifted} with performance degradation: {degraded}"
    if report.prediction_drift:
        return True, f"{drifted} with prediction drift"
    if rules.drift_alone:
        return True, f"{drifted} (drift alone is configured to trigger)"
    return False, f"{drifted} but no performance degradation or prediction drift to confirm it"
