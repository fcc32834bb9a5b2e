"""Jobs: why the running attempt was sent SIGTERM (cancel | timeout) and when, so a control plane that
restarts while an attempt shuts down still ends a timed-out job FAILED "timeout" (not retried) and sends
SIGKILL when the grace period that began before the restart runs out.

Rows of jobs from before this revision have no stop in progress ("" and 0).

Revision ID: 0014_job_stops
Revises: 0013_redact_kept_uris
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_job_stops"
down_revision: str | None = "0013_redact_kept_uris"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("stop_kind", sa.String(length=16), nullable=False, server_default=""))
        batch.add_column(sa.Column("stop_sent_at_us", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("stop_sent_at_us")
        batch.drop_column("stop_kind")
