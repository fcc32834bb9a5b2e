"""The metadata database gets an identity: ``store_identity``, one row holding a random UUID made here.

Data planes keep the catalog and deployment plans of the database they follow; a control plane started on
another database (a wrong ``AETHER_DB_URL``, a new SQLite file under another ``AETHER_HOME``) streamed that
one's content, usually empty, and every data plane applied it. The watch snapshots now carry this id, and
a data plane refuses another database's until an operator accepts it
(``control_plane/db/store_identity.py``). A database created by the migrations gets its id here too.

Revision ID: 0030_store_identity
Revises: 0029_ingestion_intent_tokens
Create Date: 2026-12-06
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0030_store_identity"
down_revision: str | None = "0029_ingestion_intent_tokens"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    bind = op.get_bind()
    # Kept by a downgrade (below): a release rolled back and forward again finds its id and keeps it.
    if not sa.inspect(bind).has_table("store_identity"):
        op.create_table(
            "store_identity",
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
            sa.Column("store_id", sa.String(length=36), nullable=False),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_store_identity")),
        )
    if bind.execute(sa.text("SELECT count(*) FROM store_identity")).scalar_one() == 0:
        bind.execute(
            sa.text("INSERT INTO store_identity (id, store_id) VALUES (1, :store_id)"),
            {"store_id": str(uuid.uuid4())},
        )


def downgrade() -> None:
    """Keeps the table: dropped, the upgrade after a rollback made the same database a new id, which every
    data plane then refused until an operator accepted it on each. Older code never reads it."""
