"""Monitoring: drift reports count the rows the monitor dropped since the previous window.

Rows late for their time window, or with another feature count than the window's, were dropped with no
trace outside the monitor's memory. Reports stored before this revision count none (0).

Revision ID: 0020_drift_report_dropped_rows
Revises: 0019_predictions_by_deployment
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020_drift_report_dropped_rows"
down_revision: str | None = "0019_predictions_by_deployment"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("drift_reports") as batch:
        batch.add_column(sa.Column("late_rows", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("mismatched_rows", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("drift_reports") as batch:
        batch.drop_column("mismatched_rows")
        batch.drop_column("late_rows")
