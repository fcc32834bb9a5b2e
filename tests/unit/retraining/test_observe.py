"""The retraining loop's performance look-back fits in one monitor query, however short the windows, and
only complete quality windows reach the trigger (on a real metadata database, each backend)."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import jobs_pb2 as jpb
from clients.aether.v1 import monitoring_pb2 as mpb
from clients.aether.v1 import retraining_pb2 as pb
from clients.errors import FailedPrecondition
from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head
from control_plane.db.clock import database_now_us
from control_plane.monitoring import config as monitor_configs
from control_plane.monitoring.feedback import IndexedPrediction, index_predictions, record_feedback
from control_plane.monitoring.performance import window_starts
from control_plane.monitoring.reports import store_report
from control_plane.offline.datasets import record_dataset
from control_plane.offline.store import OfflineStore
from control_plane.retraining import config as configs
from control_plane.retraining import evaluation_records, records
from control_plane.retraining.evaluation import EvaluationResult, ModelScore
from control_plane.retraining.observe import (
    LOOKBACK_US,
    drift_reports,
    new_labels,
    performance_lookback_us,
    performance_windows,
    retraining_spec,
)
from control_plane.retraining.promotion import AWAITING_APPROVAL, IN_PROGRESS, PROMOTED, REJECTED
from control_plane.retraining.triggers import Observations, decide, running_elsewhere, still_promoting

NOW_US = 1_800_000_000_000_000
SECOND = 1_000_000


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    yield create_session_factory(engine)
    engine.dispose()


@given(width_s=st.floats(0.5, 7 * 86_400), step_fraction=st.floats(0.01, 1.0))
def test_lookback_never_spans_more_windows_than_a_query_may(width_s: float, step_fraction: float) -> None:
    monitor = mpb.MonitorConfig(
        performance_window_seconds=width_s, performance_step_seconds=max(0.5, width_s * step_fraction)
    )
    lookback = performance_lookback_us(monitor)
    # at least one step back (a step may be longer than two days), never more than two days otherwise
    assert 0 < lookback <= max(LOOKBACK_US, round(monitor.performance_step_seconds * 1e6))
    starts = window_starts(
        NOW_US - lookback,
        NOW_US,
        round(monitor.performance_window_seconds * 1e6),
        round(monitor.performance_step_seconds * 1e6),
    )  # raises InvalidArgument past the monitor's limit
    assert starts


def test_long_windows_look_back_two_days() -> None:
    monitor = mpb.MonitorConfig(performance_window_seconds=3600, performance_step_seconds=600)
    assert performance_lookback_us(monitor) == LOOKBACK_US


def test_short_windows_look_back_less() -> None:
    monitor = mpb.MonitorConfig(performance_window_seconds=10, performance_step_seconds=5)
    assert performance_lookback_us(monitor) < 2000 * 5 * 1_000_000


def at(hour: int, minute: int = 0) -> int:
    return int(dt.datetime(2026, 5, 1, hour, minute, tzinfo=dt.UTC).timestamp()) * SECOND


def test_a_degraded_window_triggers_once_after_it_ends(sessions: sessionmaker[Session]) -> None:
    """Six-hour windows, a one-hour cooldown: the window [06:00, 12:00) holds 100 wrong predictions
    made at 08:00. While it is in progress it does not count (it would end after every trigger and so
    fire again after every cooldown); once it has ended it triggers, once."""
    monitor = monitor_configs.effective(
        mpb.MonitorConfig(
            deployment="eta",
            task=mpb.TASK_TYPE_CLASSIFICATION,
            performance_window_seconds=6 * 3600,
            min_labels=50,
        )
    )
    index_predictions(
        sessions,
        [
            IndexedPrediction(f"r{i}", 0, "eta", "eta", 1, "eta-v1", at(8) + i * 10 * SECOND, [1.0], True)
            for i in range(100)
        ],
    )
    record_feedback(sessions, [mpb.Feedback(request_id=f"r{i}", label=0.0) for i in range(100)])
    config = pb.TriggerConfig(
        deployment="eta", enabled=True, performance_threshold=0.9, cooldown_seconds=3600
    )
    rules = configs.rules_of(configs.effective(config, "accuracy"))
    last, fired = 0, []
    for now in (at(9), at(10, 5), at(11, 10), at(12), at(13, 5), at(14, 10)):
        seen = performance_windows(sessions, monitor, last, now)
        assert all(w.end_us <= now for w in seen)
        decision = decide(rules, Observations(now, now - 30 * SECOND, last, performance=seen))
        if decision.triggered:
            fired.append(now)
            last = now
    assert fired == [at(12)]


def test_a_window_of_nan_predictions_reaches_the_trigger_as_a_degradation(
    sessions: sessionmaker[Session],
) -> None:
    # Every labelled prediction NaN: the window holds no metric, and the trigger read that as "no
    # degradation" since the observation did not carry the count of unusable predictions.
    monitor = monitor_configs.effective(
        mpb.MonitorConfig(deployment="eta", task=mpb.TASK_TYPE_CLASSIFICATION, min_labels=50)
    )
    index_predictions(
        sessions,
        [
            IndexedPrediction(f"r{i}", 0, "eta", "eta", 1, "eta-v1", at(8) + i * SECOND, [math.nan], False)
            for i in range(60)
        ],
    )
    record_feedback(sessions, [mpb.Feedback(request_id=f"r{i}", label=float(i % 2)) for i in range(60)])
    (window,) = performance_windows(sessions, monitor, 0, at(12))
    assert (window.metrics, window.n_labels, window.n_invalid_predictions) == ({}, 60, 60)
    config = pb.TriggerConfig(deployment="eta", enabled=True, performance_threshold=0.9)
    rules = configs.rules_of(configs.effective(config, "accuracy"))
    decision = decide(rules, Observations(at(12), at(12) - 30 * SECOND, performance=[window]))
    assert decision.triggered and "60 of 60 labelled predictions were unusable" in decision.reasons[0]


def test_a_label_re_sent_unchanged_is_not_new_and_a_changed_one_is(sessions: sessionmaker[Session]) -> None:
    # Each re-send reset the label's recorded time: a feedback client delivering at least once made
    # old labels count as new, and the label-volume rule could trigger retraining on them.
    index_predictions(
        sessions,
        [IndexedPrediction(f"r{i}", 0, "eta", "eta", 1, "eta-v1", at(8), [1.0], True) for i in range(5)],
    )
    labels = [mpb.Feedback(request_id=f"r{i}", label=1.0) for i in range(5)]
    record_feedback(sessions, labels)
    time.sleep(0.002)  # recorded times are µs of the wall clock
    last_trigger = time.time_ns() // 1000
    time.sleep(0.002)
    record_feedback(sessions, labels)
    assert new_labels(sessions, "eta", last_trigger, time.time_ns() // 1000) == 0
    record_feedback(sessions, [mpb.Feedback(request_id="r0", label=0.0)])
    assert new_labels(sessions, "eta", last_trigger, time.time_ns() // 1000) == 1


def test_drift_reports_ending_after_now_are_not_observed(sessions: sessionmaker[Session]) -> None:
    # A count window ends at its last row's prediction time: with a data plane clock ten minutes ahead,
    # its report ends after now, and so after every later trigger too.
    for end in (at(9), at(10), at(10, 10)):
        store_report(
            sessions,
            mpb.DriftReport(
                deployment="eta",
                model_name="eta",
                version=1,
                window_start_us=end - 3600 * SECOND,
                window_end_us=end,
                n_rows=100,
                status=mpb.DRIFT_STATUS_DRIFT,
            ),
        )
    assert [r.end_us for r in drift_reports(sessions, "eta", 0, at(10))] == [at(10), at(9)]
    assert [r.end_us for r in drift_reports(sessions, "eta", at(9), at(10, 10))] == [at(10, 10), at(10)]


RECORDED = "ab" * 32


def recorded_spec(tmp_path: Path, record: Mapping[str, object]) -> tuple[jpb.JobSpec, OfflineStore]:
    offline = OfflineStore(str(tmp_path / "offline"))
    record_dataset(offline, RECORDED, record)
    spec = jpb.JobSpec(name="eta-train", dataset=jpb.DatasetRef(dataset_hash=RECORDED), features=["x@1:a"])
    return spec, offline


def test_a_recorded_dataset_is_rebuilt_over_the_configured_entity_rows(tmp_path: Path) -> None:
    """The champion trained on a recorded dataset (dataset_hash): the retraining trained on it again,
    stale, though the config named the latest window and the decision said it was validated."""
    record = {"features": ["trips@2:distance"], "entity_rows": {"timestamp_column": "label_ts"}}
    spec, offline = recorded_spec(tmp_path, record)
    config = pb.TriggerConfig(deployment="eta", entity_rows_path="/data/latest.parquet")
    rebuilt = retraining_spec(spec, config, "eta", NOW_US, offline)
    assert rebuilt.dataset == jpb.DatasetRef(
        point_in_time=jpb.PointInTimeQuery(
            entity_rows_path="/data/latest.parquet",
            features=["trips@2:distance"],
            timestamp_column="label_ts",
        )
    )
    assert (
        retraining_spec(spec, pb.TriggerConfig(deployment="eta"), "eta", NOW_US, offline).dataset
        == spec.dataset
    )


def test_entity_rows_with_no_features_to_join_block_the_retraining(tmp_path: Path) -> None:
    spec, offline = recorded_spec(tmp_path, {"output_path": "/data/old.parquet"})
    del spec.features[:]
    config = pb.TriggerConfig(deployment="eta", entity_rows_path="/data/latest.parquet")
    with pytest.raises(FailedPrecondition, match=f"dataset {RECORDED} lists no features"):
        retraining_spec(spec, config, "eta", NOW_US, offline)


def test_a_second_triggered_decision_is_stored_not_triggered_while_the_first_is_in_flight(
    sessions: sessionmaker[Session],
) -> None:
    """The in-flight check and the insert are one transaction under the deployment's lock (SQLite's write
    lock, a PostgreSQL advisory lock): the second of two triggers finds the first's decision."""
    draft = records.Draft("eta", records.now_us(), True, ("manual",), "alice", "eta", 1)
    first = records.add_submitting(sessions, draft, ["manual trigger by alice"], promoting=IN_PROGRESS)
    second = records.add_submitting(sessions, draft, ["manual trigger by bob"], promoting=IN_PROGRESS)
    other = records.add_submitting(
        sessions, replace(draft, deployment="other", model_name="other"), ["manual"], promoting=IN_PROGRESS
    )
    assert (first.outcome, second.outcome, other.outcome) == ("submitting", "not_triggered", "submitting")
    assert not second.triggered and second.reasons == ["a retraining job of this deployment is still running"]
    # Another deployment serving the same model waits too: the model has one ``challenger`` alias.
    same_model = records.add_submitting(
        sessions, replace(draft, deployment="eta-staging"), ["manual"], promoting=IN_PROGRESS
    )
    assert same_model.outcome == "not_triggered" and same_model.reasons == [running_elsewhere("eta", "eta")]


def _evaluated_challenger(sessions: sessionmaker[Session]) -> tuple[records.Draft, int]:
    """A manual retraining of deployment ``eta`` whose job ended and whose challenger, eta v7, passed its
    evaluation: its draft and the evaluation's id."""
    draft = records.Draft("eta", records.now_us(), True, ("manual",), "alice", "eta", 1)
    records.add_decision(sessions, draft, ["asked"], records.SUBMITTED, "job-1")
    decision = records.submitted(sessions, "eta")[-1]
    score = ModelScore({"mae": 0.1}, 1.0)
    result = EvaluationResult(True, ("mae ok",), score, score, 200, "production_feedback")
    evaluation = evaluation_records.add_evaluation(
        sessions, "eta", decision, 7, "mae", result, actor="retraining"
    )
    return draft, evaluation.id


def test_a_triggered_decision_is_stored_not_triggered_while_a_promotion_is_in_progress(
    sessions: sessionmaker[Session],
) -> None:
    """The promotion guard is checked in the write's transaction too: a challenger's promotion may start
    (another control plane evaluated its job) between the loop's read and the write. An evaluation with
    no promotion state yet counts as in progress (its start was cut short; its alias may be set)."""
    draft, evaluation_id = _evaluated_challenger(sessions)
    assert records.promotion_in_progress(sessions, "eta", IN_PROGRESS) == "eta v7 (not started)"
    unstarted = records.add_submitting(sessions, draft, ["manual trigger by alice"], promoting=IN_PROGRESS)
    assert unstarted.outcome == "not_triggered" and "eta v7 (not started)" in unstarted.reasons[0]

    evaluation_records.set_promotion(
        sessions, evaluation_id, AWAITING_APPROVAL, "waiting", actor="retraining"
    )
    waiting = records.add_submitting(sessions, draft, ["manual trigger by bob"], promoting=IN_PROGRESS)
    assert not waiting.triggered and waiting.reasons == [still_promoting("eta v7 (awaiting_approval)")]
    other = replace(draft, deployment="other", model_name="other")
    assert records.add_submitting(sessions, other, ["manual"], promoting=IN_PROGRESS).outcome == "submitting"
    same_model = replace(draft, deployment="eta-staging")
    held = records.add_submitting(sessions, same_model, ["manual"], promoting=IN_PROGRESS)
    assert held.reasons == [still_promoting("eta v7 (awaiting_approval)", deployment="eta")]
    assert records.retraining_elsewhere(sessions, "eta-staging", "eta", IN_PROGRESS) == held.reasons[0]
    assert (
        records.retraining_elsewhere(sessions, "eta", "eta", IN_PROGRESS) is None
    )  # its own: the guard above

    evaluation_records.set_promotion(
        sessions, evaluation_id, REJECTED, "rejected by a reviewer", actor="reviewer"
    )
    assert records.promotion_in_progress(sessions, "eta", IN_PROGRESS) is None
    ended = records.add_submitting(sessions, draft, ["manual trigger by carol"], promoting=IN_PROGRESS)
    assert ended.outcome == "submitting" and ended.triggered


def test_the_champion_serves_since_its_promotion_ended_not_since_its_row_was_last_written(
    sessions: sessionmaker[Session],
) -> None:
    """The quality windows of a promoted champion start when its promotion ended ``promoted``; a second
    write of the same status (another control plane finishing the same promotion) moved that start later
    and left the windows between the two out."""
    _, evaluation_id = _evaluated_challenger(sessions)
    assert records.last_promoted_us(sessions, "eta", PROMOTED) == 0
    evaluation_records.set_promotion(sessions, evaluation_id, PROMOTED, "promoted", actor="retraining")
    promoted_at = records.last_promoted_us(sessions, "eta", PROMOTED)
    assert promoted_at > 0
    time.sleep(0.002)
    evaluation_records.set_promotion(sessions, evaluation_id, PROMOTED, "promoted", actor="retraining")
    assert records.last_promoted_us(sessions, "eta", PROMOTED) == promoted_at


def test_a_label_recorded_before_a_trigger_whose_prediction_is_indexed_after_it_counts_once(
    sessions: sessionmaker[Session],
) -> None:
    # The label waits as an orphan (its prediction not read by the monitor yet) when the retraining
    # triggers; its prediction is indexed after the trigger. Counted by its recorded time, it belonged to
    # the period before the trigger, where it was not joined yet, and so it was counted in no period.
    def database_us() -> int:
        # The recorded and indexed times are the database's clock (whole milliseconds on SQLite): read it,
        # more than a tick of it apart from the writes on each side.
        time.sleep(0.002)
        with sessions() as session:
            now_us = database_now_us(session)
        time.sleep(0.002)
        return now_us

    record_feedback(sessions, [mpb.Feedback(request_id="late", label=1.0)])
    trigger = database_us()
    assert new_labels(sessions, "eta", 0, trigger) == 0  # what the tick at the trigger counted
    index_predictions(sessions, [IndexedPrediction("late", 0, "eta", "eta", 1, "eta-v1", at(8), [1.0], True)])
    now = database_us()
    assert new_labels(sessions, "eta", trigger, now) == 1  # the period after the trigger counts it
    assert new_labels(sessions, "eta", 0, trigger) == 0  # and the one before still does not
