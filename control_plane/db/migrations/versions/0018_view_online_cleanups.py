"""Feature views: the online cleanup of each deleted view version. Deleting a view left its Redis keys in
the online store forever; a delete now records one row per version, pending until the background cleanup
has removed the version's keys.

Views deleted before this revision are not cleaned up (their entity is no longer known).

Revision ID: 0018_view_online_cleanups
Revises: 0017_feature_view_tombstones
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018_view_online_cleanups"
down_revision: str | None = "0017_feature_view_tombstones"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "feature_view_online_cleanups",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("entity", sa.String(length=128), nullable=False),
        sa.Column("deleted_at_us", sa.BigInteger(), nullable=False),
        sa.Column("done_at_us", sa.BigInteger(), nullable=True),
        sa.Column("keys_removed", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", "version", name=op.f("pk_feature_view_online_cleanups")),
    )


def downgrade() -> None:
    op.drop_table("feature_view_online_cleanups")
