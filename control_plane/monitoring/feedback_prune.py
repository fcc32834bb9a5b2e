"""The retention of delayed labels and the prediction index (:mod:`.feedback`): what the monitor's prune
deletes, every ``prune_interval_s``, and the label horizons it dates by the database's clock.

Index rows of predictions older than the index retention go (their joined labels stay); orphaned labels
recorded before the horizon go too, counted in ``orphans_expired``; joined labels older than their own
retention go once no index row joins them any more. Every change that moves the ``orphaned`` count takes
its lock first (:func:`.feedback.lock_counts`), as the writers of labels and index rows do.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Delete, delete, or_, select
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db import read_session, write_session
from control_plane.db.clock import database_now_us
from control_plane.monitoring.feedback import ORPHANED, ORPHANS_EXPIRED, add_count, lock_counts
from control_plane.monitoring.tables import FeedbackRow, PredictionIndexRow


@dataclass(frozen=True)
class Pruned:
    """What one :func:`prune` deleted: index rows past the retention, orphaned labels, and joined labels
    no index row joins any more."""

    index_rows: int
    orphans: int
    joined_labels: int = 0


def prune(
    sessions: sessionmaker[Session],
    older_than_us: int,
    *,
    joined_before_us: int,
    orphans_before_us: int | None = None,
) -> Pruned:
    """Deletes index rows of predictions made before ``older_than_us`` (their joined labels stay), and
    orphaned labels first recorded before ``orphans_before_us`` (default ``older_than_us``), counted in
    ``orphans_expired``; then the joined labels recorded before ``joined_before_us`` that no index row left
    joins (no reader can reach them; see the module doc). Prediction times are the data planes' clocks;
    labels are stamped by the database's, which the monitor dates the label horizons by
    (:func:`label_horizons`)."""
    with write_session(sessions) as session:
        # The count's lock first, as every writer of labels and index rows takes it (one order: no
        # deadlock with index_predictions, which inserts index rows under it).
        lock_counts(session)
        result = session.execute(delete(PredictionIndexRow).where(PredictionIndexRow.ts_us < older_than_us))
        index_rows = int(getattr(result, "rowcount", 0) or 0)
        result = session.execute(
            orphan_prune(older_than_us if orphans_before_us is None else orphans_before_us)
        )
        orphans = int(getattr(result, "rowcount", 0) or 0)
        add_count(session, ORPHANED, -orphans)
        add_count(session, ORPHANS_EXPIRED, orphans)
        result = session.execute(joined_label_prune(joined_before_us))
        joined_labels = int(getattr(result, "rowcount", 0) or 0)
        return Pruned(index_rows, orphans, joined_labels)


def label_horizons(
    sessions: sessionmaker[Session], index_retention_us: int, joined_label_retention_us: int
) -> tuple[int, int]:
    """(orphans_before_us, joined_before_us) for :func:`prune`: the retentions back from the database's
    clock, which labels are stamped by (the joined labels' never later than the orphans'). Dated by the
    monitor's host clock, they were off by its skew from the database's."""
    with read_session(sessions) as session:
        now_us = database_now_us(session)
    orphans_before_us = now_us - index_retention_us
    return orphans_before_us, min(orphans_before_us, now_us - joined_label_retention_us)


def orphan_prune(older_than_us: int) -> Delete:
    """The prune's delete of the orphaned labels recorded before ``older_than_us`` (through the index on
    ``(joined, recorded_at_us)``: migration 0027)."""
    return delete(FeedbackRow).where(
        FeedbackRow.joined.is_(False), FeedbackRow.recorded_at_us < older_than_us
    )


def joined_label_prune(joined_before_us: int) -> Delete:
    """The prune's delete of the joined labels recorded before ``joined_before_us`` that no index row
    joins any more (through the index on ``(joined, recorded_at_us)``: migration 0027; before it, the
    delete read every joined label, nearly the whole table)."""
    # A label without a deployment applies to its request id and row in every deployment.
    still_joins = (
        select(PredictionIndexRow.row)
        .where(
            PredictionIndexRow.request_id == FeedbackRow.request_id,
            PredictionIndexRow.row == FeedbackRow.row,
            or_(FeedbackRow.deployment == "", PredictionIndexRow.deployment == FeedbackRow.deployment),
        )
        .exists()
    )
    return delete(FeedbackRow).where(
        FeedbackRow.joined.is_(True), FeedbackRow.recorded_at_us < joined_before_us, ~still_joins
    )
