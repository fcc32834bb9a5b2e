"""Delayed labels: the prediction index the monitor writes, feedback by request id, and their join.

The monitor writes one ``prediction_index`` row per row of every sampled, served prediction it reads
from the log: (request id, row) → deployment, model version, variant, prediction time and the row of
the prediction output. Only sampled requests carry their outputs in the log, so only they can be scored
— label the deployments you evaluate with a sample rate that covers them.

Feedback is stored whatever happens. A label whose (request id, row) is indexed is *joined*; one that is
not (the request was never sampled, or the monitor has not read its entry yet) is *orphaned*: stored
with ``joined = false`` and counted. Indexing a prediction later marks its waiting labels joined, so a
label that beat its prediction to the control plane is joined as soon as the prediction is read.
Writes are idempotent: the same (request id, row) replaces its label, and re-reading a log entry (at
least once delivery) leaves the index as it was. A label re-sent unchanged keeps the time it was first
recorded (``recorded_at_us``), so at-least-once feedback clients do not make old labels look new to the
retraining loop's label-volume rule; a changed label counts as recorded now.

A prediction value that is not finite is stored as the JSON string ``"NaN"``, ``"Infinity"`` or
``"-Infinity"`` (as protobuf's JSON writes them, and drift reports store them) and read back as that
float: PostgreSQL's JSON has no bare NaN or Infinity, and one such value failed the whole batch it was
written with.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Table, case, delete, func, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import monitoring_pb2 as pb
from clients.errors import InvalidArgument
from control_plane.db import read_session, write_session
from control_plane.monitoring.tables import REQUEST_ID_LENGTH, FeedbackRow, PredictionIndexRow

#: Rows per INSERT statement (keeps statements under SQLite's bound-parameter limit).
_CHUNK = 500
MAX_FEEDBACK_PER_CALL = 100_000


@dataclass(frozen=True)
class IndexedPrediction:
    request_id: str
    row: int
    deployment: str
    model_name: str
    version: int
    variant: str
    ts_us: int
    prediction: list[float]
    prediction_is_label: bool


@dataclass(frozen=True)
class LabelledPredictions:
    """Joined rows of one deployment, ordered by prediction time."""

    ts_us: npt.NDArray[np.int64]
    labels: npt.NDArray[np.float64]
    predictions: list[list[float]]
    is_label: npt.NDArray[np.bool_]


def index_predictions(sessions: sessionmaker[Session], rows: Sequence[IndexedPrediction]) -> int:
    """Adds the rows not indexed yet and marks their waiting feedback joined; returns how many labels
    that joined."""
    if not rows:
        return 0
    with write_session(sessions) as session:
        values = [
            {
                "request_id": r.request_id,
                "row": r.row,
                "deployment": r.deployment,
                "model_name": r.model_name,
                "version": r.version,
                "variant": r.variant,
                "ts_us": r.ts_us,
                "prediction": [_json_number(v) for v in r.prediction],
                "prediction_is_label": r.prediction_is_label,
            }
            for r in rows
        ]
        _insert_ignoring_duplicates(session, PredictionIndexRow.__table__, values)  # type: ignore[arg-type]
        # A label joins only the row it names: matching on the request id alone marked a label of row 1
        # joined when only row 0 of its request had been indexed (it never joins, yet was not counted
        # as orphaned).
        joined = 0
        keys = sorted({(r.request_id, r.row) for r in rows})
        for start in range(0, len(keys), _CHUNK):
            result = session.execute(
                update(FeedbackRow)
                .where(
                    FeedbackRow.joined.is_(False),
                    tuple_(FeedbackRow.request_id, FeedbackRow.row).in_(keys[start : start + _CHUNK]),
                )
                .values(joined=True)
            )
            joined += int(getattr(result, "rowcount", 0) or 0)
        return joined


def record_feedback(
    sessions: sessionmaker[Session], items: Sequence[pb.Feedback]
) -> pb.RecordFeedbackResponse:
    """Stores a batch of labels (replacing earlier labels of the same request id and row)."""
    if len(items) > MAX_FEEDBACK_PER_CALL:
        raise InvalidArgument(f"at most {MAX_FEEDBACK_PER_CALL} labels per call, got {len(items)}")
    latest: dict[tuple[str, int], float] = {}
    for item in items:
        if not item.request_id or len(item.request_id) > REQUEST_ID_LENGTH:
            raise InvalidArgument(f"feedback needs a request id of 1 to {REQUEST_ID_LENGTH} characters")
        if not np.isfinite(item.label):
            raise InvalidArgument(f"label of request {item.request_id!r} is not a finite number")
        latest[(item.request_id, item.row)] = item.label  # the last label of a key in one batch wins
    now_us = time.time_ns() // 1000
    with write_session(sessions) as session:
        known = _indexed_keys(session, latest)
        values = [
            {
                "request_id": rid,
                "row": row,
                "label": label,
                "joined": (rid, row) in known,
                "recorded_at_us": now_us,
            }
            for (rid, row), label in latest.items()
        ]
        _upsert_feedback(session, values)
        session.flush()
        orphaned_total = _orphaned(session)
    joined = sum(1 for key in latest if key in known)
    return pb.RecordFeedbackResponse(
        recorded=len(latest), joined=joined, orphaned=len(latest) - joined, orphaned_total=orphaned_total
    )


def orphaned_total(sessions: sessionmaker[Session]) -> int:
    with read_session(sessions) as session:
        return _orphaned(session)


def labelled_predictions(
    sessions: sessionmaker[Session], deployment: str, since_us: int, until_us: int
) -> LabelledPredictions:
    """Predictions of ``deployment`` made in ``[since_us, until_us)`` that have a label."""
    with read_session(sessions) as session:
        rows = session.execute(
            select(
                PredictionIndexRow.ts_us,
                FeedbackRow.label,
                PredictionIndexRow.prediction,
                PredictionIndexRow.prediction_is_label,
            )
            .join(
                FeedbackRow,
                (FeedbackRow.request_id == PredictionIndexRow.request_id)
                & (FeedbackRow.row == PredictionIndexRow.row),
            )
            .where(
                PredictionIndexRow.deployment == deployment,
                PredictionIndexRow.ts_us >= since_us,
                PredictionIndexRow.ts_us < until_us,
            )
            .order_by(PredictionIndexRow.ts_us)
        ).all()
    return LabelledPredictions(
        ts_us=np.array([r[0] for r in rows], dtype=np.int64),
        labels=np.array([r[1] for r in rows], dtype=np.float64),
        predictions=[[float(v) for v in r[2]] for r in rows],
        is_label=np.array([bool(r[3]) for r in rows], dtype=np.bool_),
    )


def prediction_times(
    sessions: sessionmaker[Session], deployment: str, since_us: int, until_us: int
) -> npt.NDArray[np.int64]:
    """Prediction times of every indexed prediction of ``deployment`` in ``[since_us, until_us)``."""
    with read_session(sessions) as session:
        times = (
            session.execute(
                select(PredictionIndexRow.ts_us).where(
                    PredictionIndexRow.deployment == deployment,
                    PredictionIndexRow.ts_us >= since_us,
                    PredictionIndexRow.ts_us < until_us,
                )
            )
            .scalars()
            .all()
        )
    return np.sort(np.array(times, dtype=np.int64))


def prune(sessions: sessionmaker[Session], older_than_us: int) -> int:
    """Deletes index rows of predictions made before ``older_than_us`` (their labels stay)."""
    with write_session(sessions) as session:
        result = session.execute(delete(PredictionIndexRow).where(PredictionIndexRow.ts_us < older_than_us))
        return int(getattr(result, "rowcount", 0) or 0)


def _json_number(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _orphaned(session: Session) -> int:
    return int(session.execute(select(func.count()).where(FeedbackRow.joined.is_(False))).scalar_one())


def _indexed_keys(session: Session, keys: Iterable[tuple[str, int]]) -> set[tuple[str, int]]:
    wanted = set(keys)
    ids = sorted({rid for rid, _ in wanted})
    found: set[tuple[str, int]] = set()
    for start in range(0, len(ids), _CHUNK):
        rows = session.execute(
            select(PredictionIndexRow.request_id, PredictionIndexRow.row).where(
                PredictionIndexRow.request_id.in_(ids[start : start + _CHUNK])
            )
        ).all()
        found.update((r[0], r[1]) for r in rows)
    return wanted & found


def _dialect_insert(session: Session, table: Table) -> Any:
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"monitoring needs an upsert for the {name} dialect")


def _insert_ignoring_duplicates(session: Session, table: Table, values: list[dict[str, Any]]) -> None:
    for start in range(0, len(values), _CHUNK):
        statement = _dialect_insert(session, table).on_conflict_do_nothing()
        session.execute(statement, values[start : start + _CHUNK])


def _upsert_feedback(session: Session, values: list[dict[str, Any]]) -> None:
    table: Table = FeedbackRow.__table__  # type: ignore[assignment]
    for start in range(0, len(values), _CHUNK):
        statement = _dialect_insert(session, table)
        new = statement.excluded
        # Only a changed label is recorded anew: resetting the time on every re-send counted a re-sent
        # label as new in the retraining loop's label volume (observe.new_labels).
        recorded_at = case((table.c.label == new.label, table.c.recorded_at_us), else_=new.recorded_at_us)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["request_id", "row"],
                set_={"label": new.label, "joined": new.joined, "recorded_at_us": recorded_at},
            ),
            values[start : start + _CHUNK],
        )
