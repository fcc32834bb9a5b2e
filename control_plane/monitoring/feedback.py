"""Delayed labels: the prediction index the monitor writes, feedback by request id, and their join (their
retention, the :func:`prune` named below, lives in :mod:`.feedback_prune`).

The monitor writes one ``prediction_index`` row per row of every sampled, served prediction it reads
from the log: (deployment, request id, row) → model version, variant, prediction time and the row of
the prediction output. Only sampled requests carry their outputs in the log, so only they can be scored
— label the deployments you evaluate with a sample rate that covers them. Shadow entries (mirrored calls
logged under the served call's request id) are never indexed (``entries.decode_entry``): a label joins
what the caller was served, never a shadow's output.

Request ids are chosen by clients, so several deployments may index the same one, each its own
prediction. Within a deployment a request id names one prediction: the first indexed (in log order) keeps
it, and its labels. Another prediction the deployment logged under the same request id and row (a client
re-using its ids) is not indexed, and never silently: :func:`index_predictions` returns it as a
duplicate, which the monitor counts (``aether_monitor_duplicate_request_ids_total``) and logs. A re-read of
the same entry (at-least-once delivery) is no duplicate: it is told apart by its content (version,
variant, prediction time and output row all equal the indexed row's); a second prediction equal to the
first in all of these cannot be told from a re-read across reads, only within one batch.

A label names its deployment or not (``Feedback.deployment``): one that does applies to that
deployment's prediction only; one that does not (as every label did before the field) applies to the
prediction of that request id and row in every deployment. Where a deployment has both, its own wins.

Feedback is stored whatever happens. A label with a prediction it applies to is *joined*; one without
(the request was never sampled, or the monitor has not read its entry yet) is *orphaned*: stored with
``joined = false`` and counted. Indexing a prediction later marks its waiting labels joined, so a label
that beat its prediction to the control plane is joined as soon as the prediction is read; a joined label
stays joined when its prediction's index row is pruned later (a re-send then is still joined). Writes are
idempotent: the same (request id, row, deployment) replaces its label, and re-reading a log entry (at
least once delivery) leaves the index as it was. A label re-sent unchanged keeps the time it was first
recorded (``recorded_at_us``), so at-least-once feedback clients do not make old labels look new to the
retraining loop's label-volume rule; a changed label counts as recorded now.

Orphaned labels do not wait for ever: at 1% sampling 99% of labels never join, and they piled up. The
monitor's hourly :func:`prune` deletes, with the index rows older than the retention, the orphaned labels
first recorded before it: a label joins only a prediction indexed after it, and any the monitor could still
index from that far back is itself past the retention. ``orphaned_total`` counts the orphaned labels
stored (waiting for their prediction); those retention deleted are counted apart, for good
(:func:`orphans_expired_total`, ``aether_feedback_orphans_expired``).

Joined labels have a retention too (they piled up for ever, one row per labelled prediction). Every
reader of labels (quality windows, GetPerformance, the retraining loop's label volume and its production
holdout) reads them through :func:`with_labels`, that is only through an index row they join; the only
use of a joined label no index row joins any more is that an at-least-once re-send of it still counts as
joined. So :func:`prune` deletes a joined label only when no index row it applies to is left (after that
prune's own deletions) *and* it was recorded before the joined-label horizon (the monitor's
``joined_label_retention_s``, never later than the index horizon): no reader can lose a row, and a
re-send within the retention still finds its label joined. One re-sent later is an orphan again, and
expires as orphans do. Both counts are kept in ``feedback_counts``
as they change, so that no write counts the table: every write that changes which labels are orphaned
(recording, joining, pruning) first locks the ``orphaned`` count (``FOR UPDATE``; SQLite's ``BEGIN
IMMEDIATE`` already serialises writers), so that the change it counts is the change it made. They take
their ``recorded_at_us`` / ``indexed_at_us`` stamps under that lock too, and the retraining loop's label
volume reads under it (:func:`settled_labels`): a row stamped before a tick and committed after the
tick's read fell in no label-volume period. The stamps are the database's clock
(:func:`~control_plane.db.clock.database_now_us`, one query per write transaction), as the label volume's
periods end by it: stamped by the writing host's clock, a row from a control plane whose clock ran behind
the retraining loop's was stamped at or before a tick's time after that tick had read, and fell in no
period either. The prune's label horizons are read from the same clock (:func:`prune`).

A prediction value that is not finite is stored as the JSON string ``"NaN"``, ``"Infinity"`` or
``"-Infinity"`` (as protobuf's JSON writes them, and drift reports store them) and read back as that
float: PostgreSQL's JSON has no bare NaN or Infinity, and one such value failed the whole batch it was
written with.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    case,
    func,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased, sessionmaker

from clients.aether.v1 import monitoring_pb2 as pb
from clients.errors import InvalidArgument
from control_plane.db import read_session, write_session
from control_plane.db.clock import database_now_us
from control_plane.db.models import NAME_LENGTH
from control_plane.monitoring.tables import (
    REQUEST_ID_LENGTH,
    FeedbackCountRow,
    FeedbackRow,
    PredictionIndexRow,
)

#: Rows per INSERT statement (keeps statements under SQLite's bound-parameter limit).
_CHUNK = 500
MAX_FEEDBACK_PER_CALL = 100_000
#: The row column is a 32-bit INTEGER; Feedback.row is uint32. PostgreSQL refused a row past it with a
#: DataError (INTERNAL) that lost the whole batch, valid labels too, while SQLite stored it.
MAX_ROW = 2**31 - 1
#: Names of the rows of ``feedback_counts``.
ORPHANED = "orphaned"
ORPHANS_EXPIRED = "orphans_expired"


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
class Indexed:
    """What one :func:`index_predictions` did: the waiting labels that joined, and the rows left out as
    duplicates (another prediction of the deployment holds their request id and row)."""

    joined: int
    duplicates: list[IndexedPrediction] = field(default_factory=list)


@dataclass(frozen=True)
class LabelledPredictions:
    """Joined rows of one deployment, ordered by prediction time."""

    ts_us: npt.NDArray[np.int64]
    labels: npt.NDArray[np.float64]
    predictions: list[list[float]]
    is_label: npt.NDArray[np.bool_]
    #: The (model, version) that made each row (empty where the caller did not say).
    versions: list[tuple[str, int]] = field(default_factory=list)


def index_predictions(sessions: sessionmaker[Session], rows: Sequence[IndexedPrediction]) -> Indexed:
    """Adds the rows not indexed yet and marks their waiting feedback joined; returns how many labels
    that joined, and the rows that are other predictions under an indexed (deployment, request id, row):
    those are not indexed (see the module doc). ``rows`` are distinct predictions in log order: a key
    twice among them is a duplicate however alike the two are."""
    if not rows:
        return Indexed(0)
    with write_session(sessions) as session:
        # Stamped under the lock, so that every row stamped before a label-volume read began is committed
        # when it reads, and by the database's clock, the one the read's period ends by (see
        # settled_labels).
        lock_counts(session)
        now_us = database_now_us(session)
        rows, duplicates = _first_of_each_key(session, rows)
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
                "indexed_at_us": now_us,
            }
            for r in rows
        ]
        _insert_ignoring_duplicates(session, PredictionIndexRow.__table__, values)  # type: ignore[arg-type]
        # A label joins only the row it names: matching on the request id alone marked a label of row 1
        # joined when only row 0 of its request had been indexed (it never joins, yet was not counted
        # as orphaned).
        # A label naming a deployment joins only that deployment's prediction.
        joined = 0
        keys = sorted({(r.request_id, r.row, r.deployment) for r in rows})
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            result = session.execute(
                update(FeedbackRow)
                .where(
                    FeedbackRow.joined.is_(False),
                    or_(
                        tuple_(FeedbackRow.request_id, FeedbackRow.row, FeedbackRow.deployment).in_(chunk),
                        and_(
                            FeedbackRow.deployment == "",
                            tuple_(FeedbackRow.request_id, FeedbackRow.row).in_([k[:2] for k in chunk]),
                        ),
                    ),
                )
                .values(joined=True)
            )
            joined += int(getattr(result, "rowcount", 0) or 0)
        add_count(session, ORPHANED, -joined)
        return Indexed(joined, duplicates)


def _first_of_each_key(
    session: Session, rows: Sequence[IndexedPrediction]
) -> tuple[list[IndexedPrediction], list[IndexedPrediction]]:
    """``rows`` split into those to index (the first of each key, and re-reads of indexed rows, which the
    insert leaves as they are) and the duplicates: a later row of a key in ``rows``, or a row whose key
    the index holds with another prediction."""
    first: dict[tuple[str, str, int], IndexedPrediction] = {}
    duplicates: list[IndexedPrediction] = []
    for r in rows:
        if (r.deployment, r.request_id, r.row) in first:
            duplicates.append(r)
        else:
            first[(r.deployment, r.request_id, r.row)] = r
    keys = sorted(first)
    index = PredictionIndexRow
    for start in range(0, len(keys), _CHUNK):
        stored = session.execute(
            select(
                index.deployment,
                index.request_id,
                index.row,
                index.model_name,
                index.version,
                index.variant,
                index.ts_us,
                index.prediction,
            ).where(tuple_(index.deployment, index.request_id, index.row).in_(keys[start : start + _CHUNK]))
        ).all()
        for deployment, request_id, row, model_name, version, variant, ts_us, prediction in stored:
            new = first[(deployment, request_id, row)]
            same = (model_name, version, variant, ts_us) == (
                new.model_name,
                new.version,
                new.variant,
                new.ts_us,
            )
            if not same or list(prediction) != [_json_number(v) for v in new.prediction]:
                duplicates.append(first.pop((deployment, request_id, row)))
    return list(first.values()), duplicates


def record_feedback(
    sessions: sessionmaker[Session], items: Sequence[pb.Feedback]
) -> pb.RecordFeedbackResponse:
    """Stores a batch of labels (replacing earlier labels of the same request id, row and deployment).
    An invalid item refuses the whole batch (INVALID_ARGUMENT naming its request id) before anything is
    written."""
    if len(items) > MAX_FEEDBACK_PER_CALL:
        raise InvalidArgument(f"at most {MAX_FEEDBACK_PER_CALL} labels per call, got {len(items)}")
    latest: dict[tuple[str, int, str], float] = {}
    for item in items:
        if not item.request_id or len(item.request_id) > REQUEST_ID_LENGTH:
            raise InvalidArgument(f"feedback needs a request id of 1 to {REQUEST_ID_LENGTH} characters")
        if len(item.deployment) > NAME_LENGTH:
            raise InvalidArgument(
                f"the deployment of request {item.request_id!r}'s label is longer than"
                f" {NAME_LENGTH} characters"
            )
        if not np.isfinite(item.label):
            raise InvalidArgument(f"label of request {item.request_id!r} is not a finite number")
        if item.row > MAX_ROW:
            raise InvalidArgument(f"row {item.row} of request {item.request_id!r}'s label is above {MAX_ROW}")
        # The last label of a key in one batch wins.
        latest[(item.request_id, item.row, item.deployment)] = item.label
    with write_session(sessions) as session:
        lock_counts(session)
        now_us = database_now_us(session)  # under the lock, by the database's clock: see settled_labels
        # A label joined once stays joined: its prediction's index row may have been pruned since, and an
        # at-least-once re-send must not turn it into an orphan (inflating orphaned_total).
        joined_before, orphaned_before = _stored_keys(session, latest)
        known = _indexed_keys(session, latest) | joined_before
        values = [
            {
                "request_id": rid,
                "row": row,
                "deployment": deployment,
                "label": label,
                "joined": (rid, row, deployment) in known,
                "recorded_at_us": now_us,
            }
            for (rid, row, deployment), label in latest.items()
        ]
        _upsert_feedback(session, values)
        joined = sum(1 for key in latest if key in known)
        # Every key of the batch is now stored joined or not as ``known`` says: the count changes by the
        # orphans written less the orphans they replaced.
        add_count(session, ORPHANED, len(latest) - joined - len(orphaned_before))
        orphaned_total = _count(session, ORPHANED)
    return pb.RecordFeedbackResponse(
        recorded=len(latest), joined=joined, orphaned=len(latest) - joined, orphaned_total=orphaned_total
    )


def orphaned_total(sessions: sessionmaker[Session]) -> int:
    """Orphaned labels stored: waiting for their prediction, not yet deleted by retention."""
    with read_session(sessions) as session:
        return _count(session, ORPHANED)


def orphans_expired_total(sessions: sessionmaker[Session]) -> int:
    """Orphaned labels :func:`prune` deleted, ever: they never joined a prediction."""
    with read_session(sessions) as session:
        return _count(session, ORPHANS_EXPIRED)


def labelled_predictions(
    sessions: sessionmaker[Session], deployment: str, since_us: int, until_us: int
) -> LabelledPredictions:
    """Predictions of ``deployment`` made in ``[since_us, until_us)`` that have a label."""
    with read_session(sessions) as session:
        rows = session.execute(
            with_labels(
                PredictionIndexRow.ts_us,
                PredictionIndexRow.prediction,
                PredictionIndexRow.prediction_is_label,
                PredictionIndexRow.model_name,
                PredictionIndexRow.version,
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
        labels=np.array([r.label for r in rows], dtype=np.float64),
        predictions=[[float(v) for v in r[1]] for r in rows],
        is_label=np.array([bool(r[2]) for r in rows], dtype=np.bool_),
        versions=[(str(r[3]), int(r[4])) for r in rows],
    )


def with_labels(*columns: Any) -> Select[Any]:
    """``select(*columns, label, recorded_at_us)`` over the indexed predictions that have a label: the
    label naming the prediction's deployment, else the label without a deployment (see the module doc).
    ``label`` and ``recorded_at_us`` are the last two columns, under those names."""
    own, anyone = aliased(FeedbackRow), aliased(FeedbackRow)
    label: ColumnElement[float] = func.coalesce(own.label, anyone.label)
    recorded: ColumnElement[int] = func.coalesce(own.recorded_at_us, anyone.recorded_at_us)
    index = PredictionIndexRow
    return (
        select(*columns, label.label("label"), recorded.label("recorded_at_us"))
        .select_from(index)
        .outerjoin(
            own,
            and_(
                own.request_id == index.request_id,
                own.row == index.row,
                own.deployment == index.deployment,
            ),
        )
        .outerjoin(
            anyone,
            and_(anyone.request_id == index.request_id, anyone.row == index.row, anyone.deployment == ""),
        )
        .where(or_(own.request_id.is_not(None), anyone.request_id.is_not(None)))
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


def _json_number(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


@contextmanager
def settled_labels(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A session for reading labels by the time they joined (the retraining loop's label volume,
    ``observe.label_volume``), opened once every write of labels or index rows that began before it has
    committed: any row stamped (``recorded_at_us``, ``indexed_at_us``) before this session began is
    visible in it, and any row not visible is stamped after it began. Both are stamped by the database's
    clock, so a period that ends at :func:`~control_plane.db.clock.database_now_us` read in this session
    holds every row stamped by its end; one ending at a host's clock did not (a writer's clock behind it).

    Writers stamp under the ``orphaned`` count's lock and hold it to their commit; this session takes the
    same lock (shared on PostgreSQL, after which each READ COMMITTED statement sees their commits; SQLite's
    ``BEGIN IMMEDIATE`` of a write session). A plain read missed a row stamped before a tick's ``now`` and
    committed after the tick read, and the next period began at that ``now``: it counted in no period."""
    with write_session(sessions) as session:
        lock_counts(session, shared=True)
        yield session


def lock_counts(session: Session, *, shared: bool = False) -> None:
    """Locks the ``orphaned`` count for the rest of the transaction (see the module doc); ``shared``: only
    against writers (a reader of :func:`settled_labels`)."""
    session.execute(
        select(FeedbackCountRow.value).where(FeedbackCountRow.name == ORPHANED).with_for_update(read=shared)
    ).all()


def add_count(session: Session, name: str, delta: int) -> None:
    if delta:
        session.execute(
            update(FeedbackCountRow)
            .where(FeedbackCountRow.name == name)
            .values(value=FeedbackCountRow.value + delta)
        )


def _count(session: Session, name: str) -> int:
    value = session.execute(select(FeedbackCountRow.value).where(FeedbackCountRow.name == name)).scalar()
    return int(value or 0)


def _indexed_keys(session: Session, keys: Iterable[tuple[str, int, str]]) -> set[tuple[str, int, str]]:
    """The (request id, row, deployment) label keys of ``keys`` that have a prediction to join: that
    deployment's, or for deployment "" any deployment's."""
    wanted = set(keys)
    ids = sorted({rid for rid, _, _ in wanted})
    found: set[tuple[str, int, str]] = set()
    for start in range(0, len(ids), _CHUNK):
        rows = session.execute(
            select(
                PredictionIndexRow.request_id, PredictionIndexRow.row, PredictionIndexRow.deployment
            ).where(PredictionIndexRow.request_id.in_(ids[start : start + _CHUNK]))
        ).all()
        for rid, row, deployment in rows:
            found.update(((rid, row, deployment), (rid, row, "")))
    return wanted & found


Key = tuple[str, int, str]


def _stored_keys(session: Session, keys: Iterable[Key]) -> tuple[set[Key], set[Key]]:
    """The label keys of ``keys`` stored already: (those joined, those orphaned)."""
    wanted = set(keys)
    ids = sorted({rid for rid, _, _ in wanted})
    joined: set[Key] = set()
    orphaned: set[Key] = set()
    for start in range(0, len(ids), _CHUNK):
        rows = session.execute(
            select(FeedbackRow.request_id, FeedbackRow.row, FeedbackRow.deployment, FeedbackRow.joined).where(
                FeedbackRow.request_id.in_(ids[start : start + _CHUNK])
            )
        ).all()
        for rid, row, deployment, is_joined in rows:
            (joined if is_joined else orphaned).add((rid, row, deployment))
    return joined & wanted, orphaned & wanted


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
                index_elements=["request_id", "row", "deployment"],
                set_={"label": new.label, "joined": new.joined, "recorded_at_us": recorded_at},
            ),
            values[start : start + _CHUNK],
        )
