"""Retraining: the loop's previous tick per deployment, so the schedule rule survives a restart.

Revision ID: 0011_retraining_ticks
Revises: 0010_retraining
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_retraining_ticks"
down_revision: str | None = "0010_retraining"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "retraining_ticks",
        sa.Column("deployment", sa.String(length=128), nullable=False),
        sa.Column("at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("deployment", name=op.f("pk_retraining_ticks")),
    )


def downgrade() -> None:
    op.drop_table("retraining_ticks")
