"""Labels, index rows and the label volume's periods on one clock, the database's, on both backends.

Stamped by the writing host's clock while a tick's period ended at the retraining loop's, a label
written through a control plane whose clock ran behind the loop's could be stamped at or before a tick's
time after the tick had read, and count in no period (shown end to end, with a loop whose clock runs an
hour ahead, in ``tests/integration/retraining/test_label_volume_clocks.py``). Here: the stamps and a
period's end are read from the database's clock (:func:`database_now_us`, bracketed by reads of it
before and after), a trigger keeps its period's end, and the next period starts there, not at the
trigger's time."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import monitoring_pb2 as mpb
from control_plane.db import (
    create_db_engine,
    create_session_factory,
    read_session,
    upgrade_to_head,
    write_session,
)
from control_plane.db.clock import database_now_us
from control_plane.monitoring.feedback import (
    IndexedPrediction,
    index_predictions,
    record_feedback,
)
from control_plane.monitoring.tables import FeedbackRow, PredictionIndexRow
from control_plane.retraining import records
from control_plane.retraining.observe import label_volume

HOUR_US = 3_600_000_000


def prediction(request_id: str) -> IndexedPrediction:
    return IndexedPrediction(request_id, 0, "eta", "eta", 1, "eta-v1", 1_800_000_000_000_000, [1.0], True)


def label(request_id: str) -> mpb.Feedback:
    return mpb.Feedback(request_id=request_id, label=1.0)


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine: Engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    yield create_session_factory(engine)
    engine.dispose()


def database_now(sessions: sessionmaker[Session]) -> int:
    with read_session(sessions) as session:
        return database_now_us(session)


def test_labels_and_index_rows_are_stamped_by_the_database_clock(sessions: sessionmaker[Session]) -> None:
    before = database_now(sessions)
    index_predictions(sessions, [prediction("r1")])
    record_feedback(sessions, [label("r1")])
    after = database_now(sessions)
    with read_session(sessions) as session:
        indexed_at = session.execute(select(PredictionIndexRow.indexed_at_us)).scalar_one()
        recorded_at = session.execute(select(FeedbackRow.recorded_at_us)).scalar_one()
    assert before <= indexed_at <= recorded_at <= after


def test_a_triggers_label_period_ends_at_the_database_clock_and_the_next_starts_there(
    sessions: sessionmaker[Session],
) -> None:
    index_predictions(sessions, [prediction("r1"), prediction("r2")])
    record_feedback(sessions, [label("r1")])
    before = database_now(sessions)
    counted = label_volume(sessions, "eta", 0)
    after = database_now(sessions)
    assert counted.count == 1 and before <= counted.read_at_us <= after
    assert counted.until_us == counted.read_at_us - 1  # a stamp in the read's instant: the next period's
    # Stored with a trigger dated by a loop an hour ahead: the next period starts at the period's end.
    draft = records.Draft(
        "eta", after + HOUR_US, True, ("labels",), "retraining", labels_until_us=counted.until_us
    )
    records.add_decision(sessions, draft, ["1 new labels (rule: 1)"], "blocked_no_spec")
    assert records.last_label_period_end(sessions, "eta") == counted.until_us
    record_feedback(sessions, [label("r2")])  # after the trigger: the next period's
    assert label_volume(sessions, "eta", records.last_label_period_end(sessions, "eta")).count == 1
    # A decision that did not trigger keeps no period's end, and does not move the next period's start.
    quiet = records.Draft("eta", after + 2 * HOUR_US, False, (), "retraining", labels_until_us=after + 1)
    records.add_decision(sessions, quiet, ["fewer than 5 new labels (rule: 5)"], records.NOT_TRIGGERED)
    assert records.last_label_period_end(sessions, "eta") == counted.until_us


def test_a_trigger_without_a_period_end_starts_the_next_period_at_its_time(
    sessions: sessionmaker[Session],
) -> None:
    assert records.last_label_period_end(sessions, "eta") == 0
    draft = records.Draft("eta", 1_000, True, ("manual",), "someone")
    records.add_decision(sessions, draft, ["manual trigger by someone"], "blocked_no_spec")
    assert records.last_label_period_end(sessions, "eta") == 1_000


def test_a_label_stamped_in_the_instant_a_tick_read_after_its_read_counts_in_the_next_period(
    sessions: sessionmaker[Session],
) -> None:
    """SQLite's clock is in milliseconds (PostgreSQL's in microseconds): a label written just after a tick
    read, once the tick released the writers' lock, can be stamped the very instant the tick read. Ended
    at that instant, the tick's period held it though it was written after the read (not counted), and
    the next period, after that instant, left it out too."""
    index_predictions(sessions, [prediction("r1")])
    period = label_volume(sessions, "eta", 0)
    record_feedback(sessions, [label("r1")])  # after the read
    with write_session(sessions) as session:  # in the instant the tick read, by the database's clock
        session.execute(update(FeedbackRow).values(recorded_at_us=period.read_at_us))
    assert (period.count, label_volume(sessions, "eta", period.until_us).count) == (0, 1)
