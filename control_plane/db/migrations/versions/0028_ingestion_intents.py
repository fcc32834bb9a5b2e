"""Ingestion: ``ingestion_intents``, one row per chunk (or replay group) whose offline files are being
written and not yet counted.

A batch run (or a quarantine replay's group) writes a chunk's accepted rows to the offline store and then
counts them in one SQL transaction. Killed in between (SIGKILL, power loss), or with a COMMIT whose outcome
could not be read back, it left Parquet files that no run counts and every training set read. The run now
commits an intent naming the files before writing them; the counting transaction deletes it, and a
recovery pass removes the files of an intent its owner let lapse (``control_plane/ingestion/intents.py``).

Revision ID: 0028_ingestion_intents
Revises: 0027_feedback_prune_index
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0028_ingestion_intents"
down_revision: str | None = "0027_feedback_prune_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ingestion_intents",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.String(length=200), nullable=False),
        sa.Column("chunk", sa.Integer(), nullable=False),
        sa.Column("view", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("paths", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingestion_intents")),
    )
    op.create_index("ix_ingestion_intents_state_updated", "ingestion_intents", ["state", "updated_at_us"])


def downgrade() -> None:
    op.drop_index("ix_ingestion_intents_state_updated", table_name="ingestion_intents")
    op.drop_table("ingestion_intents")
