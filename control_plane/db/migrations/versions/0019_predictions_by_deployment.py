"""Monitoring: the prediction index keyed by (deployment, request id, row), and feedback by (request id,
row, deployment).

Request ids are chosen by clients, so two deployments may see the same one. Keyed by (request id, row),
the index kept only the first deployment's prediction (the second was ignored as a duplicate) and labels
joined it for both. Existing index rows keep their deployment; existing labels get deployment ``""``,
which applies to every deployment's prediction of that request id, as they did before.

Revision ID: 0019_predictions_by_deployment
Revises: 0018_view_online_cleanups
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019_predictions_by_deployment"
down_revision: str | None = "0018_view_online_cleanups"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch_alter_table: SQLite cannot change a primary key in place, so the table is copied.
    with op.batch_alter_table("prediction_index") as batch:
        batch.drop_constraint("pk_prediction_index", type_="primary")
        batch.create_primary_key("pk_prediction_index", ["deployment", "request_id", "row"])
        batch.create_index("ix_prediction_index_request", ["request_id", "row"])
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("deployment", sa.String(length=128), nullable=False, server_default=""))
        batch.drop_constraint("pk_feedback", type_="primary")
        batch.create_primary_key("pk_feedback", ["request_id", "row", "deployment"])


def downgrade() -> None:
    # Below this revision a request id has one prediction and one label: of several, the prediction of
    # the deployment first by name is kept, and the label without a deployment (else the label of the
    # deployment first by name).
    op.execute(
        "DELETE FROM feedback WHERE deployment <> '' AND EXISTS (SELECT 1 FROM feedback AS other"
        " WHERE other.request_id = feedback.request_id AND other.row = feedback.row"
        " AND (other.deployment = '' OR other.deployment < feedback.deployment))"
    )
    op.execute(
        "DELETE FROM prediction_index WHERE EXISTS (SELECT 1 FROM prediction_index AS other"
        " WHERE other.request_id = prediction_index.request_id AND other.row = prediction_index.row"
        " AND other.deployment < prediction_index.deployment)"
    )
    with op.batch_alter_table("feedback") as batch:
        batch.drop_constraint("pk_feedback", type_="primary")
        batch.create_primary_key("pk_feedback", ["request_id", "row"])
        batch.drop_column("deployment")
    with op.batch_alter_table("prediction_index") as batch:
        batch.drop_index("ix_prediction_index_request")
        batch.drop_constraint("pk_prediction_index", type_="primary")
        batch.create_primary_key("pk_prediction_index", ["request_id", "row"])
