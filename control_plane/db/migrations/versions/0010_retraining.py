"""Retraining: trigger configs, trigger decisions, challenger/champion evaluations and promotions.

Revision ID: 0010_retraining
Revises: 0009_monitoring
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_retraining"
down_revision: str | None = "0009_monitoring"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "retraining_configs",
        sa.Column("deployment", sa.String(length=128), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.Column("updated_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("deployment", name=op.f("pk_retraining_configs")),
    )
    op.create_table(
        "retraining_decisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment", sa.String(length=128), nullable=False),
        sa.Column("at_us", sa.BigInteger(), nullable=False),
        sa.Column("triggered", sa.Boolean(), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("champion_version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retraining_decisions")),
    )
    op.create_index("ix_retraining_decisions_deployment_at", "retraining_decisions", ["deployment", "at_us"])
    op.create_index(op.f("ix_retraining_decisions_outcome"), "retraining_decisions", ["outcome"])
    op.create_table(
        "retraining_evaluations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment", sa.String(length=128), nullable=False),
        sa.Column("decision_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("champion_version", sa.Integer(), nullable=False),
        sa.Column("challenger_version", sa.Integer(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("metric", sa.String(length=128), nullable=False),
        sa.Column("champion_metrics", sa.JSON(), nullable=False),
        sa.Column("challenger_metrics", sa.JSON(), nullable=False),
        sa.Column("champion_p95_ms", sa.Double(), nullable=False),
        sa.Column("challenger_p95_ms", sa.Double(), nullable=False),
        sa.Column("holdout_rows", sa.BigInteger(), nullable=False),
        sa.Column("holdout_source", sa.String(length=32), nullable=False),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retraining_evaluations")),
    )
    op.create_index("ix_retraining_evaluations_deployment", "retraining_evaluations", ["deployment", "id"])
    op.create_table(
        "retraining_promotions",
        sa.Column("evaluation_id", sa.Integer(), nullable=False),
        sa.Column("deployment", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("agreement_rate", sa.Double(), nullable=True),
        sa.Column("phase_started_at_us", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("evaluation_id", name=op.f("pk_retraining_promotions")),
    )
    op.create_index(op.f("ix_retraining_promotions_deployment"), "retraining_promotions", ["deployment"])
    op.create_index(op.f("ix_retraining_promotions_status"), "retraining_promotions", ["status"])


def downgrade() -> None:
    op.drop_index(op.f("ix_retraining_promotions_status"), table_name="retraining_promotions")
    op.drop_index(op.f("ix_retraining_promotions_deployment"), table_name="retraining_promotions")
    op.drop_table("retraining_promotions")
    op.drop_index("ix_retraining_evaluations_deployment", table_name="retraining_evaluations")
    op.drop_table("retraining_evaluations")
    op.drop_index(op.f("ix_retraining_decisions_outcome"), table_name="retraining_decisions")
    op.drop_index("ix_retraining_decisions_deployment_at", table_name="retraining_decisions")
    op.drop_table("retraining_decisions")
    op.drop_table("retraining_configs")
