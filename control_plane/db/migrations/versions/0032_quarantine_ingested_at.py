"""Quarantine: ``quarantine.ingested_at_us``, the ingestion time of the row a replay stored offline for an
``online_pending`` record.

A replay of a batch view's record stores its row offline (with the replay's ``ingested_ts``) and commits
the record ``online_pending`` before its online write. When that write failed, the next replay wrote the
online value from the record's payload, which carries no ingestion time, so the blob's write time was
the time of that later replay. A batch run that stored the same entity and event time in between won the
point-in-time join (a tie of event times goes to the later ingestion) but lost the online key to that
stamp: online and training sets disagreed for good. The record now keeps the stored row's ``ingested_ts``
here, and its online value is written with it.

Records committed before this revision have none (NULL); their online values are stamped when they are
written, as before.

Revision ID: 0032_quarantine_ingested_at
Revises: 0031_ingestion_run_published
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0032_quarantine_ingested_at"
down_revision: str | None = "0031_ingestion_run_published"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("quarantine") as batch:
        batch.add_column(sa.Column("ingested_at_us", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("quarantine") as batch:
        batch.drop_column("ingested_at_us")
