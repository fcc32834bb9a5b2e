"""Monitoring: feedback counts kept as they change, and how many orphaned labels retention deleted.

Every RecordFeedback counted all orphaned labels (a full count inside its write transaction) and nothing
ever deleted feedback, so the count, and each call, grew without bound. ``feedback_counts`` holds the
number of orphaned labels stored (``orphaned``, seeded here with the current count) and of orphans the
monitor's retention deleted since (``orphans_expired``).

Revision ID: 0023_feedback_counts
Revises: 0022_registered_model_tombstones
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023_feedback_counts"
down_revision: str | None = "0022_registered_model_tombstones"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    counts = op.create_table(
        "feedback_counts",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_feedback_counts")),
    )
    orphaned = op.get_bind().execute(sa.text("SELECT count(*) FROM feedback WHERE NOT joined")).scalar_one()
    op.bulk_insert(
        counts, [{"name": "orphaned", "value": int(orphaned)}, {"name": "orphans_expired", "value": 0}]
    )


def downgrade() -> None:
    op.drop_table("feedback_counts")
