"""Feature views: the highest version each deleted view reached, so that a view created again under the
same name continues from there instead of reusing version 1 (whose online keys, offline-store folder and
schema fingerprint still hold the deleted view's data).

Views deleted before this revision left no record: a name re-created after it starts at version 1 as before.

Revision ID: 0017_feature_view_tombstones
Revises: 0016_quarantine_source_index
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017_feature_view_tombstones"
down_revision: str | None = "0016_quarantine_source_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "feature_view_tombstones",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("last_version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_feature_view_tombstones")),
    )


def downgrade() -> None:
    op.drop_table("feature_view_tombstones")
