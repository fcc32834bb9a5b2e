"""Ingestion: each ``ingestion_intents`` row gets a ``token``, a random identity never reused.

On SQLite the row id is a plain ``INTEGER PRIMARY KEY`` (no AUTOINCREMENT): once the recovery deleted the
newest intent, the next announce got the same id. A run whose intent the recovery had taken (its files
removed) then deleted the new run's intent in its commit, matching on the id alone, and was counted,
while the new run's chunk was refused. The chunk's transaction, its drop and the recovery now match on
the id and the token together (``control_plane/ingestion/intents.py``). Rows kept before this revision
get a token each here.

Revision ID: 0029_ingestion_intent_tokens
Revises: 0028_ingestion_intents
Create Date: 2026-12-06
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0029_ingestion_intent_tokens"
down_revision: str | None = "0028_ingestion_intents"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ingestion_intents") as batch:
        batch.add_column(sa.Column("token", sa.String(length=32), nullable=True))
    connection = op.get_bind()
    ids = connection.execute(sa.text("SELECT id FROM ingestion_intents WHERE token IS NULL")).scalars()
    for row_id in list(ids):
        connection.execute(
            sa.text("UPDATE ingestion_intents SET token = :token WHERE id = :id"),
            {"token": uuid.uuid4().hex, "id": row_id},
        )
    with op.batch_alter_table("ingestion_intents") as batch:
        batch.alter_column("token", existing_type=sa.String(length=32), nullable=False)
    op.create_index("ux_ingestion_intents_token", "ingestion_intents", ["token"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_ingestion_intents_token", table_name="ingestion_intents")
    with op.batch_alter_table("ingestion_intents") as batch:
        batch.drop_column("token")
