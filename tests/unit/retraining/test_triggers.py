"""The trigger step function, property-tested against its written rules."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.retraining.cron import parse
from control_plane.retraining.triggers import (
    DRIFT,
    LABELS,
    MANUAL,
    PERFORMANCE,
    SCHEDULE,
    Decision,
    DriftObservation,
    ManualRequest,
    Observations,
    PerformanceObservation,
    TriggerRules,
    decide,
    still_promoting,
)

MINUTE_US = 60_000_000
NOW = int(dt.datetime(2025, 3, 1, tzinfo=dt.UTC).timestamp()) * 1_000_000

times = st.integers(NOW - 10 * 24 * 3600 * 1_000_000, NOW)
# Windows may end after now: a quality window still in progress, a drift report of a count window whose
# last row a data plane with its clock ahead stamped in the future.
ends = st.one_of(times, st.integers(NOW - 3600 * 1_000_000, NOW + 3600 * 1_000_000))
drift_reports = st.lists(
    st.builds(DriftObservation, end_us=ends, data_drift=st.booleans(), prediction_drift=st.booleans()),
    max_size=4,
)
windows = st.lists(
    st.builds(
        PerformanceObservation,
        end_us=ends,
        metrics=st.fixed_dictionaries({"accuracy": st.floats(0, 1)}),
    ),
    max_size=4,
)
observations = st.builds(
    Observations,
    now_us=st.just(NOW),
    previous_tick_us=st.integers(NOW - 3600 * 1_000_000, NOW),
    last_triggered_us=st.one_of(st.just(0), times),
    retraining_running=st.booleans(),
    performance=windows,
    drift=drift_reports,
    new_labels=st.integers(0, 1000),
)


@settings(max_examples=300, deadline=None)
@given(observations, st.booleans())
def test_drift_alone_never_triggers_unless_configured(seen: Observations, alone: bool) -> None:
    """Only drift configured, no prediction drift anywhere: triggers iff drift_alone and a fresh drifted
    report exists (and no guard holds)."""
    seen = Observations(
        now_us=seen.now_us,
        previous_tick_us=seen.previous_tick_us,
        last_triggered_us=seen.last_triggered_us,
        retraining_running=seen.retraining_running,
        performance=seen.performance,
        drift=[DriftObservation(r.end_us, r.data_drift, False) for r in seen.drift],
    )
    rules = TriggerRules(drift=True, drift_alone=alone, performance_metric="accuracy", cooldown_s=600)
    decision = decide(rules, seen)
    fresh = [r for r in seen.drift if seen.last_triggered_us < r.end_us <= NOW]
    newest_drifted = bool(fresh) and max(fresh, key=lambda r: r.end_us).data_drift
    cooled = not seen.last_triggered_us or NOW - seen.last_triggered_us >= 600 * 1_000_000
    expected = alone and newest_drifted and cooled and not seen.retraining_running
    assert decision.triggered == expected
    if decision.triggered:
        assert decision.rules == (DRIFT,)


@settings(max_examples=300, deadline=None)
@given(observations, st.floats(0.05, 0.95))
def test_drift_triggers_with_a_confirming_signal(seen: Observations, threshold: float) -> None:
    rules = TriggerRules(
        drift=True, performance_metric="accuracy", performance_threshold=threshold, cooldown_s=0
    )
    decision = decide(rules, seen)
    fresh_drift = [r for r in seen.drift if seen.last_triggered_us < r.end_us <= NOW]
    fresh_perf = [w for w in seen.performance if seen.last_triggered_us < w.end_us <= NOW]
    report = max(fresh_drift, key=lambda r: r.end_us) if fresh_drift else None
    window = max(fresh_perf, key=lambda w: w.end_us) if fresh_perf else None
    degraded = window is not None and window.metrics["accuracy"] < threshold
    drift_fires = report is not None and report.data_drift and (degraded or report.prediction_drift)
    if seen.retraining_running:
        assert not decision.triggered
        return
    assert decision.triggered == (degraded or drift_fires)
    assert (DRIFT in decision.rules) == drift_fires
    assert (PERFORMANCE in decision.rules) == degraded


@settings(max_examples=300, deadline=None)
@given(observations, st.floats(1, 48 * 3600), st.booleans())
def test_cooldown_is_respected(seen: Observations, cooldown_s: float, manual: bool) -> None:
    rules = TriggerRules(
        schedule=parse("* * * * *"),
        drift=True,
        drift_alone=True,
        performance_metric="accuracy",
        performance_threshold=1.1,  # always degraded
        new_labels=1,
        cooldown_s=cooldown_s,
    )
    request = ManualRequest("alice", "new data") if manual else None
    seen = Observations(
        now_us=seen.now_us,
        previous_tick_us=seen.previous_tick_us,
        last_triggered_us=seen.last_triggered_us,
        performance=seen.performance,
        drift=seen.drift,
        new_labels=seen.new_labels,
        manual=request,
    )
    decision = decide(rules, seen)
    cooling = bool(seen.last_triggered_us) and NOW - seen.last_triggered_us < cooldown_s * 1e6
    # In a cooldown, a cron minute counts when it starts a full cooldown after the last trigger's minute.
    cooled_minute = seen.last_triggered_us // MINUTE_US * MINUTE_US + cooldown_s * 1e6
    minute_due = seen.previous_tick_us > 0 and any(
        seen.previous_tick_us < m <= NOW and m >= cooled_minute
        for m in range(NOW - NOW % MINUTE_US - 48 * 3600 * 1_000_000, NOW + 1, MINUTE_US)
    )
    if manual:
        assert decision.triggered and decision.rules == (MANUAL,)
        assert "alice" in decision.reasons[0]
    elif cooling and minute_due:
        assert decision.triggered and decision.rules == (SCHEDULE,)
    elif cooling:
        assert not decision.triggered and "cooldown" in decision.reasons[0]


def test_windows_started_before_the_champion_served_do_not_count() -> None:
    """They judged the model the promoted champion replaced: counted, they retrained it at once."""
    rules = TriggerRules(performance_metric="accuracy", performance_threshold=0.9, drift=True, cooldown_s=0)
    promoted = NOW - 30 * MINUTE_US
    old_model = PerformanceObservation(NOW - MINUTE_US, {"accuracy": 0.5}, 100, start_us=promoted - MINUTE_US)
    drifted = DriftObservation(NOW - MINUTE_US, True, True, 0.5, start_us=promoted - MINUTE_US)
    seen = Observations(
        now_us=NOW,
        last_triggered_us=NOW - 120 * MINUTE_US,
        champion_since_us=promoted,
        performance=[old_model],
        drift=[drifted],
    )
    assert not decide(rules, seen).triggered
    new_model = PerformanceObservation(NOW - MINUTE_US, {"accuracy": 0.5}, 100, start_us=promoted)
    assert decide(rules, replace(seen, performance=[new_model])).rules == (PERFORMANCE,)


def test_a_cron_minute_a_full_cooldown_after_the_last_triggers_minute_fires() -> None:
    """Hourly schedule, one-hour cooldown: triggered 15 s into 12:00, the tick 10 s into 13:00 is 5 s short
    of the cooldown, but its minute starts a full hour after 12:00. It skipped every other hour by chance."""
    hourly = TriggerRules(schedule=parse("0 * * * *"), cooldown_s=3600, new_labels=1)
    noon = NOW + 12 * 60 * MINUTE_US
    seen = Observations(
        now_us=noon + 60 * MINUTE_US + 10_000_000,
        previous_tick_us=noon + 59 * MINUTE_US + 40_000_000,
        last_triggered_us=noon + 15_000_000,
        new_labels=5,
    )
    assert decide(hourly, seen) == Decision(True, (SCHEDULE,), ("schedule '0 * * * *' matched",))
    # The other rules wait out the cooldown itself; a minute short of a full cooldown waits too.
    shorter = Observations(
        now_us=noon + 59 * MINUTE_US + 10_000_000,
        previous_tick_us=noon + 58 * MINUTE_US + 40_000_000,
        last_triggered_us=noon + 15_000_000,
        new_labels=5,
    )
    assert not decide(TriggerRules(schedule=parse("59 * * * *"), new_labels=1), shorter).triggered


def test_a_cooldown_ending_past_the_calendar_is_still_a_cooldown() -> None:
    """A config stored before cooldowns were bounded: its end (year 33715) broke the reason's date, and
    every tick after a trigger raised ValueError for the deployment, deciding and recording nothing."""
    rules = TriggerRules(schedule=parse("* * * * *"), cooldown_s=1e12)
    seen = Observations(now_us=NOW, previous_tick_us=NOW - 2 * MINUTE_US, last_triggered_us=NOW - MINUTE_US)
    decision = decide(rules, seen)
    assert not decision.triggered
    assert decision.reasons[0].startswith("cooldown of 1e+12 s until")


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["*/15 * * * *", "0 * * * *", "30 2 * * *", "0 0 * * 1", "7,8 9-17 * * 1-5"]),
    st.integers(0, 20 * 24 * 60),
    st.integers(1, 600),
)
def test_schedule_fires_exactly_at_cron_matches(expression: str, offset_min: int, span_s: int) -> None:
    schedule = parse(expression)
    previous = NOW + offset_min * MINUTE_US + 123
    now = previous + span_s * 1_000_000
    decision = decide(TriggerRules(schedule=schedule), Observations(now_us=now, previous_tick_us=previous))
    minutes = range(previous // MINUTE_US + 1, now // MINUTE_US + 1)
    expected = any(schedule.matches(dt.datetime.fromtimestamp(m * 60, dt.UTC)) for m in minutes)
    assert decision.triggered == expected
    assert decision.rules == ((SCHEDULE,) if expected else ())


def test_label_volume_and_running_job_and_promotion_and_explanations() -> None:
    rules = TriggerRules(new_labels=500)
    assert not decide(rules, Observations(now_us=NOW, new_labels=499)).triggered
    fired = decide(rules, Observations(now_us=NOW, new_labels=500))
    assert fired.triggered and fired.rules == (LABELS,) and "500 new labels" in fired.reasons[0]
    busy = decide(rules, Observations(now_us=NOW, new_labels=900, retraining_running=True))
    assert not busy.triggered and "still running" in busy.reasons[0]
    promoting = Observations(now_us=NOW, new_labels=900, promotion_in_progress="eta v3 (canary)")
    held = decide(rules, promoting)
    assert not held.triggered and held.reasons == (still_promoting("eta v3 (canary)"),)
    assert "eta v3 (canary)" in held.reasons[0] and "still in progress" in held.reasons[0]
    asked = ManualRequest("alice", "new data")
    manual = decide(rules, Observations(now_us=NOW, promotion_in_progress="eta v3 (canary)", manual=asked))
    assert not manual.triggered and manual.reasons == held.reasons
    elsewhere = still_promoting("eta v3 (canary)", deployment="eta-eu")
    assert "deployment 'eta-eu'" in elsewhere and "same model" in elsewhere
    for seen in (Observations(now_us=NOW, new_labels=900), Observations(now_us=NOW, manual=asked)):
        by_other = decide(rules, replace(seen, held_by=elsewhere))
        assert not by_other.triggered and by_other.reasons == (elsewhere,)
    assert decide(TriggerRules(), Observations(now_us=NOW)).reasons == ("no trigger rule is configured",)
    drift_only = decide(
        TriggerRules(drift=True), Observations(now_us=NOW, drift=[DriftObservation(NOW, True, False, 0.5)])
    )
    assert not drift_only.triggered and "no performance degradation" in drift_only.reasons[0]
    mae = TriggerRules(performance_metric="mae", performance_threshold=2.0, error_metric=True)
    worse = decide(mae, Observations(now_us=NOW, performance=[PerformanceObservation(NOW, {"mae": 2.5})]))
    assert worse.triggered and "above threshold" in worse.reasons[0]


def test_a_quality_window_still_in_progress_does_not_count() -> None:
    rules = TriggerRules(performance_metric="accuracy", performance_threshold=0.9, cooldown_s=600)
    hour = 3600 * 1_000_000
    running = PerformanceObservation(NOW + hour, {"accuracy": 0.1})  # ends an hour from now
    # Triggered two hours ago and cooled down: the running window ends after that trigger, and after any
    # later one, so counting it would retrain again after every cooldown on the same window.
    seen = Observations(now_us=NOW, last_triggered_us=NOW - 2 * hour, performance=[running])
    assert not decide(rules, seen).triggered
    ended = PerformanceObservation(NOW, {"accuracy": 0.1})
    fired = decide(rules, Observations(now_us=NOW, last_triggered_us=NOW - 2 * hour, performance=[ended]))
    assert fired.triggered and fired.rules == (PERFORMANCE,)


def test_a_window_whose_labelled_predictions_were_unusable_is_a_degradation() -> None:
    # A model answering NaN on every labelled row has no metric in its window: the rule read a missing
    # metric as "no degradation", so the total failure never retrained (nor confirmed data drift).
    rules = TriggerRules(performance_metric="accuracy", performance_threshold=0.9, drift=True)
    nan_model = PerformanceObservation(NOW, {}, n_labels=60, n_invalid_predictions=60)
    drifted = DriftObservation(NOW, True, False, 0.5)
    fired = decide(rules, Observations(now_us=NOW, performance=[nan_model], drift=[drifted]))
    assert fired.triggered and fired.rules == (PERFORMANCE, DRIFT)
    assert "60 of 60 labelled predictions were unusable (missing or not finite)" in fired.reasons[0]
    assert "accuracy undefined" in fired.reasons[0] and "with performance degradation" in fired.reasons[1]
    # As the monitor's DEGRADED: some unusable predictions degrade a window within the threshold too.
    some = PerformanceObservation(NOW, {"accuracy": 0.95}, n_labels=60, n_invalid_predictions=3)
    fired = decide(rules, Observations(now_us=NOW, performance=[some]))
    assert fired.triggered and "3 of 60 labelled predictions were unusable" in fired.reasons[0]
    # A metric undefined for another reason (no positive prediction) is still no degradation.
    undefined = PerformanceObservation(NOW, {}, n_labels=60)
    assert not decide(rules, Observations(now_us=NOW, performance=[undefined])).triggered


@settings(max_examples=200, deadline=None)
@given(
    st.integers(-3600, 3600),
    st.booleans(),
    st.integers(1, 600),
    st.integers(1, 900),
)
def test_one_drift_report_triggers_at_most_once(
    end_offset_s: int, prediction_drift: bool, cooldown_s: int, tick_s: int
) -> None:
    """Stepping the trigger over time on the same observations, as the loop does, one drifted report
    (ending before or after the first tick) retrains at most once, and never before it has ended."""
    rules = TriggerRules(drift=True, drift_alone=True, cooldown_s=cooldown_s)
    report = DriftObservation(NOW + end_offset_s * 1_000_000, True, prediction_drift, 0.5)
    now, last, fired = NOW, 0, []
    for _ in range(12):
        if decide(rules, Observations(now_us=now, last_triggered_us=last, drift=[report])).triggered:
            fired.append(now)
            last = now
        now += tick_s * 1_000_000
    assert len(fired) <= 1
    assert all(at >= report.end_us for at in fired)
    if report.end_us <= NOW + 11 * tick_s * 1_000_000:  # it ended while the loop was ticking
        assert len(fired) == 1
