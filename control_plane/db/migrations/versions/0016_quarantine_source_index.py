"""Quarantine: an index on (view, version, source_id, record_key), through which a batch run finds the copies
that an earlier run of the same source left of its rejected records (they are marked ``superseded``).
Led by view and version, so that SQLite, which keeps no statistics, prefers it to (view, status).

Revision ID: 0016_quarantine_source_index
Revises: 0015_audit_outcome
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0016_quarantine_source_index"
down_revision: str | None = "0015_audit_outcome"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_quarantine_source_record", "quarantine", ["view", "version", "source_id", "record_key"]
    )


def downgrade() -> None:
    # "superseded" records stay as they are: an earlier revision lists and refuses them like discarded ones.
    op.drop_index("ix_quarantine_source_record", table_name="quarantine")
