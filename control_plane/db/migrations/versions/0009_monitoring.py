"""Monitoring: reference profiles, monitor configs, drift reports, the prediction index, feedback and
performance alerts.

Revision ID: 0009_monitoring
Revises: 0008_jobs
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_monitoring"
down_revision: str | None = "0008_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reference_profiles",
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("artifact_sha256", sa.String(length=64), nullable=False),
        sa.Column("feature_names", sa.JSON(), nullable=False),
        sa.Column("output_artifact_sha256", sa.String(length=64), nullable=False),
        sa.Column("output_names", sa.JSON(), nullable=False),
        sa.Column("n_rows", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("model_name", "version", name=op.f("pk_reference_profiles")),
    )
    op.create_table(
        "monitor_configs",
        sa.Column("deployment", sa.String(length=128), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.Column("updated_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("deployment", name=op.f("pk_monitor_configs")),
    )
    op.create_table(
        "drift_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment", sa.String(length=128), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("window_start_us", sa.BigInteger(), nullable=False),
        sa.Column("window_end_us", sa.BigInteger(), nullable=False),
        sa.Column("n_rows", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("prediction_status", sa.String(length=32), nullable=False),
        sa.Column("test", sa.String(length=32), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=False),
        sa.Column("correction", sa.String(length=32), nullable=False),
        sa.Column("drifted_share", sa.Double(), nullable=False),
        sa.Column("drift_share_threshold", sa.Double(), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drift_reports")),
    )
    op.create_index("ix_drift_reports_deployment_end", "drift_reports", ["deployment", "window_end_us"])
    op.create_table(
        "prediction_index",
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.Column("deployment", sa.String(length=128), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("variant", sa.String(length=128), nullable=False),
        sa.Column("ts_us", sa.BigInteger(), nullable=False),
        sa.Column("prediction", sa.JSON(), nullable=False),
        sa.Column("prediction_is_label", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", "row", name=op.f("pk_prediction_index")),
    )
    op.create_index("ix_prediction_index_deployment_ts", "prediction_index", ["deployment", "ts_us"])
    op.create_table(
        "feedback",
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.Column("label", sa.Double(), nullable=False),
        sa.Column("joined", sa.Boolean(), nullable=False),
        sa.Column("recorded_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", "row", name=op.f("pk_feedback")),
    )
    op.create_index(op.f("ix_feedback_joined"), "feedback", ["joined"])
    op.create_table(
        "performance_alerts",
        sa.Column("deployment", sa.String(length=128), nullable=False),
        sa.Column("window_start_us", sa.BigInteger(), nullable=False),
        sa.Column("metric", sa.String(length=128), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("alerted_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("deployment", "window_start_us", name=op.f("pk_performance_alerts")),
    )


def downgrade() -> None:
    op.drop_table("performance_alerts")
    op.drop_index(op.f("ix_feedback_joined"), table_name="feedback")
    op.drop_table("feedback")
    op.drop_index("ix_prediction_index_deployment_ts", table_name="prediction_index")
    op.drop_table("prediction_index")
    op.drop_index("ix_drift_reports_deployment_end", table_name="drift_reports")
    op.drop_table("drift_reports")
    op.drop_table("monitor_configs")
    op.drop_table("reference_profiles")
