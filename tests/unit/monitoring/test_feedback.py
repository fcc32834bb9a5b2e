"""Feedback joined by request id (and deployment); orphaned feedback stored, counted, and joined when
its prediction arrives; idempotent writes; a migration that keeps stored labels joined."""

from __future__ import annotations

import numpy as np
import pytest
from alembic import command
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import monitoring_pb2 as pb
from clients.errors import InvalidArgument
from control_plane.db import upgrade_to_head
from control_plane.db.migrate import alembic_config
from control_plane.monitoring.feedback import (
    IndexedPrediction,
    index_predictions,
    labelled_predictions,
    orphaned_total,
    record_feedback,
)
from control_plane.monitoring.feedback_prune import prune


def indexed(request_id: str, ts_us: int, score: float, row: int = 0) -> IndexedPrediction:
    return IndexedPrediction(request_id, row, "churn", "churn-model", 1, "primary", ts_us, [score], False)


def test_feedback_joins_known_predictions_and_keeps_unknown_ones_as_orphans(
    sessions: sessionmaker[Session],
) -> None:
    index_predictions(
        sessions, [indexed("a", 100, 0.9), indexed("b", 200, 0.2), indexed("b", 200, 0.7, row=1)]
    )
    answer = record_feedback(
        sessions,
        [
            pb.Feedback(request_id="a", label=1),
            pb.Feedback(request_id="b", row=1, label=0),
            pb.Feedback(request_id="late", label=1),
        ],
    )
    assert (answer.recorded, answer.joined, answer.orphaned, answer.orphaned_total) == (3, 2, 1, 1)
    joined = labelled_predictions(sessions, "churn", 0, 1000)
    assert list(joined.ts_us) == [100, 200] and list(joined.labels) == [1.0, 0.0]
    assert joined.predictions == [[0.9], [0.7]]

    # The prediction of the orphan is read later: the label joins, the orphan count drops.
    assert index_predictions(sessions, [indexed("late", 300, 0.4)]).joined == 1
    assert orphaned_total(sessions) == 0
    assert list(labelled_predictions(sessions, "churn", 0, 1000).ts_us) == [100, 200, 300]


def test_a_row_past_the_int32_column_is_refused_before_anything_is_written(
    sessions: sessionmaker[Session],
) -> None:
    # PostgreSQL refused it with a DataError (INTERNAL) and lost the batch's valid labels with it; SQLite
    # stored it. Now both refuse it, naming the request.
    batch = [pb.Feedback(request_id="fine", label=1.0), pb.Feedback(request_id="far", row=2**31, label=0.0)]
    with pytest.raises(InvalidArgument, match=r"row 2147483648 of request 'far'"):
        record_feedback(sessions, batch)
    assert orphaned_total(sessions) == 0  # the valid label was not written either
    batch[1].row = 2**31 - 1
    assert record_feedback(sessions, batch).recorded == 2


def test_a_label_joins_only_when_its_own_row_is_indexed(sessions: sessionmaker[Session]) -> None:
    # A label of row 1 was marked joined when only row 0 of its request was indexed: it could never
    # join, yet it dropped out of the orphan count.
    record_feedback(sessions, [pb.Feedback(request_id="a", row=1, label=1)])
    assert index_predictions(sessions, [indexed("a", 100, 0.9)]).joined == 0
    assert orphaned_total(sessions) == 1
    assert index_predictions(sessions, [indexed("a", 100, 0.4, row=1)]).joined == 1
    assert orphaned_total(sessions) == 0
    assert list(labelled_predictions(sessions, "churn", 0, 1000).labels) == [1.0]


def test_writes_are_idempotent_and_a_resent_label_replaces_the_old_one(
    sessions: sessionmaker[Session],
) -> None:
    rows = [indexed("a", 100, 0.9)]
    index_predictions(sessions, rows)
    index_predictions(sessions, rows)  # the same log entry delivered twice
    record_feedback(sessions, [pb.Feedback(request_id="a", label=0)])
    record_feedback(sessions, [pb.Feedback(request_id="a", label=1), pb.Feedback(request_id="zz", label=1)])
    record_feedback(sessions, [pb.Feedback(request_id="zz", label=0)])
    joined = labelled_predictions(sessions, "churn", 0, 1000)
    assert list(joined.labels) == [1.0]
    assert orphaned_total(sessions) == 1


def test_pruning_drops_old_index_rows_only(sessions: sessionmaker[Session]) -> None:
    index_predictions(sessions, [indexed("old", 10, 0.1), indexed("new", 1000, 0.1)])
    assert prune(sessions, 500, joined_before_us=0).index_rows == 1
    record_feedback(
        sessions, [pb.Feedback(request_id="old", label=1), pb.Feedback(request_id="new", label=1)]
    )
    assert orphaned_total(sessions) == 1
    assert np.array_equal(labelled_predictions(sessions, "churn", 0, 2000).ts_us, [1000])


def test_a_joined_label_re_sent_after_its_index_row_was_pruned_stays_joined(
    sessions: sessionmaker[Session],
) -> None:
    # At-least-once feedback: a re-send after the hourly prune turned a joined label into an orphan.
    index_predictions(sessions, [indexed("a", 100, 0.9)])
    assert record_feedback(sessions, [pb.Feedback(request_id="a", label=1)]).joined == 1
    assert prune(sessions, 500, joined_before_us=0).index_rows == 1
    answer = record_feedback(sessions, [pb.Feedback(request_id="a", label=1)])
    assert (answer.joined, answer.orphaned, answer.orphaned_total) == (1, 0, 0)
    assert orphaned_total(sessions) == 0


def test_a_prediction_that_is_not_finite_is_indexed_on_every_backend_and_reads_back_as_is(
    sessions: sessionmaker[Session],
) -> None:
    # PostgreSQL's JSON has no NaN or Infinity: writing them failed the whole batch of index rows.
    rows = [
        IndexedPrediction("n", 0, "churn", "churn-model", 1, "primary", 100, [float("nan"), 0.5], False),
        IndexedPrediction(
            "i", 0, "churn", "churn-model", 1, "primary", 200, [float("inf"), -float("inf")], False
        ),
    ]
    index_predictions(sessions, rows)
    record_feedback(sessions, [pb.Feedback(request_id="n", label=1), pb.Feedback(request_id="i", label=0)])
    joined = labelled_predictions(sessions, "churn", 0, 1000)
    assert np.isnan(joined.predictions[0][0]) and joined.predictions[0][1] == 0.5
    assert joined.predictions[1] == [float("inf"), -float("inf")]


def served_by(deployment: str, request_id: str, ts_us: int, score: float) -> IndexedPrediction:
    return IndexedPrediction(
        request_id, 0, deployment, f"{deployment}-model", 1, "primary", ts_us, [score], False
    )


def test_each_deployment_keeps_its_own_prediction_of_a_shared_request_id(
    sessions: sessionmaker[Session],
) -> None:
    # The index was keyed by (request id, row): the second deployment's prediction of a client-chosen
    # request id was dropped, and its labels joined the first deployment's prediction instead.
    index_predictions(sessions, [served_by("fraud", "order-7", 100, 0.9)])
    index_predictions(sessions, [served_by("churn", "order-7", 200, 0.2)])
    answer = record_feedback(sessions, [pb.Feedback(request_id="order-7", label=1)])
    assert (answer.joined, answer.orphaned) == (1, 0)
    # A label without a deployment applies to every deployment's prediction of that request id.
    assert labelled_predictions(sessions, "fraud", 0, 1000).predictions == [[0.9]]
    assert labelled_predictions(sessions, "churn", 0, 1000).predictions == [[0.2]]

    # A label naming its deployment joins that deployment's prediction only, and wins over the
    # label without one there.
    answer = record_feedback(sessions, [pb.Feedback(request_id="order-7", label=0, deployment="churn")])
    assert (answer.joined, answer.orphaned) == (1, 0)
    assert list(labelled_predictions(sessions, "churn", 0, 1000).labels) == [0.0]
    assert list(labelled_predictions(sessions, "fraud", 0, 1000).labels) == [1.0]


def test_a_label_for_one_deployment_waits_for_that_deployments_prediction(
    sessions: sessionmaker[Session],
) -> None:
    index_predictions(sessions, [served_by("fraud", "r1", 100, 0.9)])
    answer = record_feedback(sessions, [pb.Feedback(request_id="r1", label=1, deployment="churn")])
    assert (answer.joined, answer.orphaned) == (0, 1)
    assert labelled_predictions(sessions, "fraud", 0, 1000).predictions == []
    assert index_predictions(sessions, [served_by("churn", "r1", 150, 0.3)]).joined == 1
    assert orphaned_total(sessions) == 0
    assert labelled_predictions(sessions, "churn", 0, 1000).predictions == [[0.3]]


def test_predictions_and_labels_stored_before_the_deployment_key_still_join(
    db_url: str, engine: Engine, sessions: sessionmaker[Session]
) -> None:
    """Migration 0019 moves the index to (deployment, request id, row) and gives stored labels
    deployment "" (every deployment), so what was joined before it stays joined."""
    engine.dispose()
    command.downgrade(alembic_config(db_url), "0018_view_online_cleanups")
    with engine.begin() as connection:  # as the control plane before 0019 wrote them
        connection.execute(
            text(
                "INSERT INTO prediction_index (request_id, row, deployment, model_name, version, variant,"
                " ts_us, prediction, prediction_is_label) VALUES ('old', 0, 'churn', 'm', 1, 'primary',"
                " 100, '[0.8]', false)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO feedback (request_id, row, label, joined, recorded_at_us)"
                " VALUES ('old', 0, 1, true, 5), ('early', 0, 0, false, 5)"
            )
        )
    upgrade_to_head(engine)
    assert labelled_predictions(sessions, "churn", 0, 1000).predictions == [[0.8]]
    assert orphaned_total(sessions) == 1
    assert index_predictions(sessions, [served_by("fraud", "early", 200, 0.1)]).joined == 1
    assert list(labelled_predictions(sessions, "fraud", 0, 1000).labels) == [0.0]


def test_another_prediction_under_an_indexed_request_id_is_reported_as_a_duplicate(
    sessions: sessionmaker[Session],
) -> None:
    # The index keeps one prediction per (deployment, request id, row). A second prediction a client sent
    # under the same request id was skipped by the insert without a word: its label silently judged the
    # first prediction. The first keeps the label; the second is now reported, re-reads are not.
    assert index_predictions(sessions, [indexed("a", 100, 0.9)]).duplicates == []
    again = index_predictions(sessions, [indexed("a", 100, 0.9)])  # the same entry read again
    assert (again.joined, again.duplicates) == (0, [])
    odd = [indexed("n", 50, float("nan")), indexed("p", 60, 0.1 + 0.2)]  # stored as "NaN", and a float
    index_predictions(sessions, odd)
    assert index_predictions(sessions, odd).duplicates == []  # read back equal: no duplicate
    other = indexed("a", 200, 0.2)
    assert index_predictions(sessions, [other]).duplicates == [other]
    # Two predictions under one id in one batch: the first (in log order) is indexed.
    first, second = indexed("b", 300, 0.1), indexed("b", 300, 0.1)
    assert index_predictions(sessions, [first, second]).duplicates == [second]
    record_feedback(sessions, [pb.Feedback(request_id="a", label=1)])
    joined = labelled_predictions(sessions, "churn", 0, 1000)
    assert list(joined.ts_us) == [100] and joined.predictions == [[0.9]]
