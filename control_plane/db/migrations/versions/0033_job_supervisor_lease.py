"""Jobs: ``job_supervisor_lease``, the leader lease of the job supervisors sharing a database.

Two control planes on one ``AETHER_DB_URL`` (or an old one still alive during a restart) each ran a
supervisor, and both launched, re-adopted, stopped and ended the same jobs. Now a supervisor acts only
while it holds this lease (``control_plane/jobs/lease.py``), renews it, takes it over once it has expired,
and commits each decision only if the lease's epoch is still the one it took (fencing). One row, made
here unheld (epoch 0, expired).

Revision ID: 0033_job_supervisor_lease
Revises: 0032_quarantine_ingested_at
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0033_job_supervisor_lease"
down_revision: str | None = "0032_quarantine_ingested_at"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_supervisor_lease",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("expires_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_supervisor_lease")),
    )
    op.get_bind().execute(
        sa.text("INSERT INTO job_supervisor_lease (id, holder, epoch, expires_at_us) VALUES (1, '', 0, 0)")
    )


def downgrade() -> None:
    op.drop_table("job_supervisor_lease")
