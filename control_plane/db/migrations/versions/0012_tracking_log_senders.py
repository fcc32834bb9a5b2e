"""Tracking: the highest applied sequence per sender of keyed LogBatch requests, so that a retried
request is not written twice.

Revision ID: 0012_tracking_log_senders
Revises: 0011_retraining_ticks
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_tracking_log_senders"
down_revision: str | None = "0011_retraining_ticks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tracking_log_senders",
        sa.Column("sender_id", sa.String(length=64), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("first_seen_us", sa.BigInteger(), nullable=False),
        sa.Column("applied_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("sender_id", name=op.f("pk_tracking_log_senders")),
    )
    op.create_index(
        "ix_tracking_log_senders_applied", "tracking_log_senders", ["applied_at_us"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_tracking_log_senders_applied", table_name="tracking_log_senders")
    op.drop_table("tracking_log_senders")
