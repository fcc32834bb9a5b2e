"""Experiment tracking tables: experiments, runs, parameters, tags, metric chunks, latest metric values
and run artifacts.

Revision ID: 0002_tracking
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_tracking"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _run_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["run_pk"], ["tracking_runs.id"], name=op.f(f"fk_{table}_run_pk_tracking_runs"), ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "tracking_experiments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracking_experiments")),
        sa.UniqueConstraint("experiment_id", name=op.f("uq_tracking_experiments_experiment_id")),
        sa.UniqueConstraint("name", name=op.f("uq_tracking_experiments_name")),
    )
    op.create_table(
        "tracking_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("experiment_pk", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("start_time_us", sa.BigInteger(), nullable=False),
        sa.Column("end_time_us", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_pk"],
            ["tracking_experiments.id"],
            name=op.f("fk_tracking_runs_experiment_pk_tracking_experiments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracking_runs")),
        sa.UniqueConstraint("run_id", name=op.f("uq_tracking_runs_run_id")),
    )
    op.create_index(
        "ix_tracking_runs_experiment_start", "tracking_runs", ["experiment_pk", "start_time_us"], unique=False
    )
    op.create_table(
        "tracking_artifacts",
        sa.Column("run_pk", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=250), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("logged_at_us", sa.BigInteger(), nullable=False),
        _run_fk("tracking_artifacts"),
        sa.PrimaryKeyConstraint("run_pk", "name", name=op.f("pk_tracking_artifacts")),
    )
    op.create_index(op.f("ix_tracking_artifacts_sha256"), "tracking_artifacts", ["sha256"], unique=False)
    op.create_table(
        "tracking_metric_chunks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_pk", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("steps", sa.LargeBinary(), nullable=False),
        sa.Column("values", sa.LargeBinary(), nullable=False),
        sa.Column("timestamps_us", sa.LargeBinary(), nullable=False),
        _run_fk("tracking_metric_chunks"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracking_metric_chunks")),
    )
    op.create_index(
        "ix_tracking_metric_chunks_run_key", "tracking_metric_chunks", ["run_pk", "key", "id"], unique=False
    )
    op.create_table(
        "tracking_metric_latest",
        sa.Column("run_pk", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("timestamp_us", sa.BigInteger(), nullable=False),
        sa.Column("min_value", sa.Double(), nullable=False),
        sa.Column("max_value", sa.Double(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        _run_fk("tracking_metric_latest"),
        sa.PrimaryKeyConstraint("run_pk", "key", name=op.f("pk_tracking_metric_latest")),
    )
    for table in ("tracking_params", "tracking_tags"):
        op.create_table(
            table,
            sa.Column("run_pk", sa.Integer(), nullable=False),
            sa.Column("key", sa.String(length=250), nullable=False),
            sa.Column("value", sa.Text(), nullable=False),
            _run_fk(table),
            sa.PrimaryKeyConstraint("run_pk", "key", name=op.f(f"pk_{table}")),
        )


def downgrade() -> None:
    for table in (
        "tracking_tags",
        "tracking_params",
        "tracking_metric_latest",
        "tracking_metric_chunks",
        "tracking_artifacts",
        "tracking_runs",
        "tracking_experiments",
    ):
        op.drop_table(table)
