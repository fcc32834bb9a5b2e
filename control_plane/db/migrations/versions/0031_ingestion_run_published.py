"""Ingestion runs count the records a replay published to its view's stream: ``ingestion_runs.published``.

A replay of a streaming view's records publishes them to the view's stream (a Redis stream or a Kafka
topic), where its materializer reads them and counts each accepted or quarantined in its stream run. The
replay run counted them accepted too, so summed over the runs each replayed record was accepted twice.
The replay run now counts them ``published`` (outside ``records_in``, which stays ``accepted +
quarantined``: what the run itself decided), and the stream run counts what becomes of them. The
streaming replay runs recorded before this revision keep the counts they have (which of their accepted
records were published is not recorded).

Revision ID: 0031_ingestion_run_published
Revises: 0030_store_identity
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0031_ingestion_run_published"
down_revision: str | None = "0030_store_identity"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ingestion_runs") as batch:
        batch.add_column(sa.Column("published", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("ingestion_runs") as batch:
        batch.drop_column("published")
