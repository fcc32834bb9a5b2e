"""Monitoring: ``prediction_index.indexed_at_us``, when the monitor indexed the prediction.

The retraining loop's label-volume rule counts the labels that joined a prediction since the last
trigger, and it counted them by the time the label was recorded. A label recorded before a trigger whose
prediction the monitor indexed after it (the label waited as an orphan: the monitor was behind, or the
request was labelled before its log entry was read) was not joined when the trigger's tick counted, and
was recorded before the next period began: it was counted in no period. A label now counts when it
became joined for that prediction, the later of its recorded time and its prediction's indexed time
(``control_plane.retraining.observe.new_labels``), so each counts once, in exactly one period.

Rows indexed before this revision have none (NULL) and count by their label's recorded time, as before.

Revision ID: 0035_prediction_index_indexed_at
Revises: 0034_metric_chunk_step_ranges
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0035_prediction_index_indexed_at"
down_revision: str | None = "0034_metric_chunk_step_ranges"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("prediction_index") as batch:
        batch.add_column(sa.Column("indexed_at_us", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("prediction_index") as batch:
        batch.drop_column("indexed_at_us")
