"""Audit log: the outcome of each entry, so that refused model operations are logged too ("" for a change
carried out, "refused: <gRPC status name>: <message>" for a refused one).

Entries from before this revision get "" (they were all carried out). The chain's hash covers the
outcome only when it is not empty, so they verify exactly as before.

Revision ID: 0015_audit_outcome
Revises: 0014_job_stops
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015_audit_outcome"
down_revision: str | None = "0014_job_stops"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("outcome", sa.String(length=2048), nullable=False, server_default=""))


def downgrade() -> None:
    # A refused entry's hash covers its outcome: without the column it would no longer verify, and
    # deleting it would leave a gap in the chain. So a log holding one cannot be downgraded.
    refused = op.get_bind().scalar(sa.text("SELECT COUNT(*) FROM audit_log WHERE outcome <> ''"))
    if refused:
        raise RuntimeError(
            f"cannot downgrade below 0015_audit_outcome: the audit log holds {refused} refused"
            " operation(s), whose hashes cover their outcome (the chain would no longer verify)"
        )
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("outcome")
