"""Orphaned labels have a retention, and counting them costs no scan of the feedback table: labels whose
prediction was never sampled (99% at a 1% sample rate) were kept for ever, and every RecordFeedback
counted all of them inside its write transaction (9.8 ms per one-label call at 50k labels, 37 ms at
200k)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.db import read_session
from control_plane.monitoring import feedback
from control_plane.monitoring.feedback import (
    IndexedPrediction,
    index_predictions,
    orphaned_total,
    record_feedback,
)
from control_plane.monitoring.feedback_prune import Pruned, prune
from control_plane.monitoring.tables import FeedbackRow

FAR_AHEAD_US = 10**12  # a retention horizon past every label recorded by the test


def indexed(request_id: str, ts_us: int, deployment: str = "churn") -> IndexedPrediction:
    return IndexedPrediction(request_id, 0, deployment, "churn-model", 1, "primary", ts_us, [0.5], False)


def stored(sessions: sessionmaker[Session], *, joined: bool | None = None) -> int:
    query = select(func.count()).select_from(FeedbackRow)
    if joined is not None:
        query = query.where(FeedbackRow.joined.is_(joined))
    with read_session(sessions) as session:
        return int(session.execute(query).scalar_one())


def now_us() -> int:
    return time.time_ns() // 1000


def test_orphans_recorded_before_the_retention_are_deleted_and_counted_apart(
    sessions: sessionmaker[Session],
) -> None:
    index_predictions(sessions, [indexed("served", 100)])
    record_feedback(sessions, [pb.Feedback(request_id=r, label=1) for r in ("served", "lost-1", "lost-2")])
    prune(sessions, 50, joined_before_us=0)  # the labels are newer than the horizon: kept
    assert stored(sessions) == 3 and orphaned_total(sessions) == 2

    pruned = prune(sessions, now_us() + FAR_AHEAD_US, joined_before_us=0)
    # The joined label stays (the retraining loop reads it); the orphans could never join any more.
    assert stored(sessions) == 1 and stored(sessions, joined=True) == 1
    assert pruned == Pruned(index_rows=1, orphans=2)
    assert (orphaned_total(sessions), feedback.orphans_expired_total(sessions)) == (0, 2)
    # One sent again is an orphan again, and the count of those expired is kept.
    answer = record_feedback(sessions, [pb.Feedback(request_id="lost-1", label=0)])
    assert (answer.orphaned, answer.orphaned_total) == (1, 1)
    assert (orphaned_total(sessions), feedback.orphans_expired_total(sessions)) == (1, 2)


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def keep(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.lower().split()))

    event.listen(engine, "before_cursor_execute", keep)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", keep)


def test_recording_feedback_does_not_count_the_feedback_table(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    record_feedback(sessions, [pb.Feedback(request_id=f"orphan-{i}", label=1) for i in range(50)])
    with statements(engine) as seen:
        answer = record_feedback(sessions, [pb.Feedback(request_id="one", label=1)])
        assert orphaned_total(sessions) == 51
    assert answer.orphaned_total == 51
    counts = [s for s in seen if "count(" in s and "from feedback" in s]
    assert counts == [], "the orphan count must not scan the feedback table on every call"


def test_the_kept_orphan_count_follows_every_change_of_the_labels(sessions: sessionmaker[Session]) -> None:
    def check(expected: int) -> None:
        assert orphaned_total(sessions) == stored(sessions, joined=False) == expected

    record_feedback(sessions, [pb.Feedback(request_id="a", label=1), pb.Feedback(request_id="b", label=0)])
    check(2)
    record_feedback(sessions, [pb.Feedback(request_id="a", label=0)])  # a changed orphan stays one
    check(2)
    record_feedback(sessions, [pb.Feedback(request_id="a", label=0), pb.Feedback(request_id="a", label=1)])
    check(2)
    assert index_predictions(sessions, [indexed("a", 100)]).joined == 1  # its prediction arrives: joined
    check(1)
    index_predictions(sessions, [indexed("a", 100)])  # the same entry read again
    check(1)
    record_feedback(sessions, [pb.Feedback(request_id="a", label=1)])  # a re-send of a joined label
    check(1)
    # A label naming another deployment waits for that deployment's prediction; one naming none joins.
    record_feedback(
        sessions,
        [pb.Feedback(request_id="c", label=1, deployment="fraud"), pb.Feedback(request_id="c", label=1)],
    )
    check(3)
    assert index_predictions(sessions, [indexed("c", 200)]).joined == 1
    check(2)
    assert index_predictions(sessions, [indexed("c", 200, deployment="fraud")]).joined == 1
    check(1)
    prune(sessions, now_us() + FAR_AHEAD_US, joined_before_us=0)
    check(0)
    assert feedback.orphans_expired_total(sessions) == 1


def test_joined_labels_no_prediction_joins_any_more_are_deleted_and_the_readable_ones_stay(
    sessions: sessionmaker[Session],
) -> None:
    recent_us = now_us()
    index_predictions(
        sessions,
        [
            indexed("old", 100),
            indexed("recent", recent_us),
            # A label without a deployment joins both: it stays while either prediction is indexed.
            indexed("shared", 100),
            indexed("shared", recent_us, deployment="fraud"),
        ],
    )
    record_feedback(sessions, [pb.Feedback(request_id=r, label=1) for r in ("old", "recent", "shared")])
    assert stored(sessions, joined=True) == 3

    # Labels recorded after the joined-label horizon stay even when their prediction is gone.
    assert prune(sessions, 500, joined_before_us=0).joined_labels == 0
    assert stored(sessions, joined=True) == 3

    pruned = prune(sessions, 500, joined_before_us=now_us() + FAR_AHEAD_US)
    assert pruned == Pruned(index_rows=0, orphans=0, joined_labels=1)
    with read_session(sessions) as session:
        kept = set(session.execute(select(FeedbackRow.request_id)).scalars())
    assert kept == {"recent", "shared"}
    # What the readers join is all still there, and no count moved.
    assert list(feedback.labelled_predictions(sessions, "churn", 0, recent_us + 1).ts_us) == [recent_us]
    assert list(feedback.labelled_predictions(sessions, "fraud", 0, recent_us + 1).ts_us) == [recent_us]
    assert (orphaned_total(sessions), feedback.orphans_expired_total(sessions)) == (0, 0)


def test_the_monitor_settings_read_the_joined_label_retention() -> None:
    from control_plane.monitoring.settings import MonitoringSettings

    settings = MonitoringSettings.from_env({"AETHER_MONITOR_JOINED_LABEL_RETENTION_S": "3600"})
    assert settings.joined_label_retention_s == 3600.0
    assert MonitoringSettings.from_env({}).joined_label_retention_s == 30 * 24 * 3600.0
