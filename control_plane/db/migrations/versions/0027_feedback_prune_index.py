"""Feedback: an index on (joined, recorded_at_us), through which the monitor's prune finds the labels
recorded before its horizons, in place of the index on ``joined`` alone.

The prune (``monitoring/feedback.prune``, every ``prune_interval_s``) deletes the orphaned labels
(``joined = false``) recorded before the index retention's horizon and the joined labels recorded before
the joined-label retention's (``joined_label_retention_s``) that no index row joins any more. The only
index it could use was ``ix_feedback_joined``: each delete read every label of its kind, and the joined
ones are nearly the whole table (EXPLAIN QUERY PLAN on SQLite: ``SEARCH feedback USING INDEX
ix_feedback_joined (joined=?)``), checking each one's time and then its join, once a prune interval,
for a table that only grows between prunes. Led by ``joined`` and then ordered by time, the new index
hands each delete exactly the labels recorded before its horizon. It serves every lookup by ``joined``
alone as the old one did (the same leading column), so the old one goes: one index fewer to write for
each label recorded or joined.

PostgreSQL builds the index holding a lock that blocks writes to ``feedback`` (not reads) meanwhile.

Revision ID: 0027_feedback_prune_index
Revises: 0026_redact_audit_webhooks
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0027_feedback_prune_index"
down_revision: str | None = "0026_redact_audit_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_feedback_joined_recorded", "feedback", ["joined", "recorded_at_us"])
    op.drop_index(op.f("ix_feedback_joined"), table_name="feedback")


def downgrade() -> None:
    op.create_index(op.f("ix_feedback_joined"), "feedback", ["joined"])
    op.drop_index("ix_feedback_joined_recorded", table_name="feedback")
