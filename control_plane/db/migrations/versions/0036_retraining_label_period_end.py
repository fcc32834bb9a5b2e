"""Retraining: ``retraining_decisions.labels_until_us``, where a trigger's label-volume period ended.

The label-volume rule counts the labels that joined since the last trigger, and that period ended at the
tick's time, the retraining loop's host clock, while labels are stamped by the clock of the control plane
that wrote them. A label written through one whose clock ran behind the loop's was stamped at or before a
tick's time after that tick had read: counted in no period. Labels are now stamped by the database's
clock, a tick's period ends at the database's clock read as it counts, and a trigger keeps that end here:
the next period starts there, not at the trigger's time (``control_plane.retraining.observe.label_volume``).

Decisions stored before this revision have none (NULL): the period after them starts at their time, as
before.

Revision ID: 0036_retraining_label_period_end
Revises: 0035_prediction_index_indexed_at
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0036_retraining_label_period_end"
down_revision: str | None = "0035_prediction_index_indexed_at"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("retraining_decisions") as batch:
        batch.add_column(sa.Column("labels_until_us", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("retraining_decisions") as batch:
        batch.drop_column("labels_until_us")
