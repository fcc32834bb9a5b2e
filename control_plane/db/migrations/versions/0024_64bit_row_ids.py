"""Generated ids, and the columns that refer to them, become 64-bit on PostgreSQL.

They were ``integer`` columns numbered by ``serial`` sequences there, which stop at 2**31 - 1: from then
on every insert into the table failed (INTERNAL), and quarantine ids and metric chunks advance once per
rejected record and per metric per logged batch. The API's ids are int64, and on SQLite the same columns
are rowids, already 64-bit, so this migration does nothing there (``control_plane.db.models.ROW_ID``).

Each table is altered once (PostgreSQL rewrites it, holding an exclusive lock meanwhile, so a large
quarantine or metric table takes a while). A ``serial``'s sequence is its own object, created ``AS
integer`` and so ending at 2**31 - 1 whatever its column's type: each is altered ``AS bigint`` too, which
raises that default maximum to 2**63 - 1 and keeps the sequence's position.

Revision ID: 0024_64bit_row_ids
Revises: 0023_feedback_counts
Create Date: 2026-12-12
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024_64bit_row_ids"
down_revision: str | None = "0023_feedback_counts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Per table, its generated id (the first column; numbered by a ``serial`` sequence) and the columns
#: that hold another table's id (foreign keys, and the retraining tables' plain references).
_COLUMNS: dict[str, list[str]] = {
    "entities": ["id"],
    "feature_views": ["id"],
    "feature_view_versions": ["id", "view_id", "entity_id"],
    "registry_revision": ["id"],
    "tracking_experiments": ["id"],
    "tracking_runs": ["id", "experiment_pk"],
    "tracking_params": ["run_pk"],
    "tracking_tags": ["run_pk"],
    "tracking_metric_chunks": ["id", "run_pk"],
    "tracking_metric_latest": ["run_pk"],
    "tracking_artifacts": ["run_pk"],
    "registered_models": ["id"],
    "model_versions": ["id", "model_id"],
    "model_version_features": ["model_version_id"],
    "model_aliases": ["model_id", "model_version_id"],
    "deployments": ["id"],
    "deployment_variants": ["id", "deployment_id"],
    "deployments_revision": ["id"],
    "quarantine": ["id"],
    "drift_reports": ["id"],
    "job_events": ["id"],
    "retraining_decisions": ["id"],
    "retraining_evaluations": ["id", "decision_id"],
    "retraining_promotions": ["evaluation_id"],
}


def _retype(sql_type: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return  # SQLite: INTEGER PRIMARY KEY is the 64-bit rowid, and INTEGER columns hold 64 bits
    for table, columns in _COLUMNS.items():
        changes = ", ".join(f'ALTER COLUMN "{column}" TYPE {sql_type}' for column in columns)
        op.execute(f'ALTER TABLE "{table}" {changes}')
        for column in columns:
            sequence = bind.execute(
                sa.text("SELECT pg_get_serial_sequence(:table, :column)"),
                {"table": f'"{table}"', "column": column},
            ).scalar_one()
            if sequence is not None:  # a serial's own sequence (only the generated ids have one)
                op.execute(f"ALTER SEQUENCE {sequence} AS {sql_type}")


def upgrade() -> None:
    _retype("bigint")


def downgrade() -> None:
    # Fails (integer out of range) once an id past 2**31 - 1 was given out: those rows cannot go back.
    _retype("integer")
