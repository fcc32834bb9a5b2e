"""Retraining: when each decision row was stored (``stored_at_us``), beside when it was decided
(``at_us``, the trigger step's start).

The submit grace of a decision left ``submitting`` (another control plane may be submitting its job) ran
from ``at_us``, so a slow step (a data-window check of many files) shortened it, down to nothing, and
this plane ended the other's decision and retrained too. It runs from the row's write now. Rows kept
before this revision take their ``at_us``, the best time known for them.

Revision ID: 0021_decision_stored_at
Revises: 0020_drift_report_dropped_rows
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021_decision_stored_at"
down_revision: str | None = "0020_drift_report_dropped_rows"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("retraining_decisions") as batch:
        batch.add_column(sa.Column("stored_at_us", sa.BigInteger(), nullable=False, server_default="0"))
    op.execute("UPDATE retraining_decisions SET stored_at_us = at_us")


def downgrade() -> None:
    with op.batch_alter_table("retraining_decisions") as batch:
        batch.drop_column("stored_at_us")
