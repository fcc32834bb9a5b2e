"""Model registry: the highest version number each deleted registered model gave out, so that a model
registered again under the same name continues from there instead of giving out version 1 again (whose
number its audit entries, approvals and the data planes that loaded it still name).

Models deleted before this revision left no record: a name registered again after it starts at 1 as before.

Revision ID: 0022_registered_model_tombstones
Revises: 0021_decision_stored_at
Create Date: 2026-12-09
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022_registered_model_tombstones"
down_revision: str | None = "0021_decision_stored_at"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "registered_model_tombstones",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("last_version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_registered_model_tombstones")),
    )


def downgrade() -> None:
    op.drop_table("registered_model_tombstones")
