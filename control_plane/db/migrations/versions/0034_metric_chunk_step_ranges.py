"""Tracking: each metric chunk's step range (``min_step``, ``max_step``), so a GetMetricHistory page reads
only the chunks that can hold its points.

A page decoded every stored point of the metric to answer one page: a metric of millions of points cost
seconds and its whole size in memory per page. With each chunk's step range indexed, a page reads the
chunks whose range reaches past its token, in order of their lowest step, and stops at the first chunk
that starts after the page's last step (``control_plane/tracking/history.py``).

The ranges of the chunks stored so far are computed here from their steps, a batch of rows at a time.
The columns stay nullable, so adding them rewrites no table (SQLite would copy every chunk); a chunk
without a range (one written by an older control plane still running on the database) is read by every
page, as before.

Revision ID: 0034_metric_chunk_step_ranges
Revises: 0033_job_supervisor_lease
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import sqlalchemy as sa
from alembic import op

revision: str = "0034_metric_chunk_step_ranges"
down_revision: str | None = "0033_job_supervisor_lease"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Chunks whose steps are read and whose ranges are written per statement.
_BATCH_ROWS = 2000


def upgrade() -> None:
    with op.batch_alter_table("tracking_metric_chunks") as batch:
        batch.add_column(sa.Column("min_step", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("max_step", sa.BigInteger(), nullable=True))
    bind = op.get_bind()
    chunks = sa.text(
        "SELECT id, steps FROM tracking_metric_chunks WHERE min_step IS NULL AND id > :after ORDER BY id"
        " LIMIT :rows"
    )
    ranges = sa.text("UPDATE tracking_metric_chunks SET min_step = :low, max_step = :high WHERE id = :id")
    after = -1
    while rows := bind.execute(chunks, {"after": after, "rows": _BATCH_ROWS}).all():
        updates = []
        for chunk_id, steps in rows:
            decoded = np.frombuffer(steps, dtype="<i8")
            if len(decoded):  # a chunk without points (none is written) keeps no range: read by every page
                updates.append({"id": chunk_id, "low": int(decoded.min()), "high": int(decoded.max())})
        if updates:
            bind.execute(ranges, updates)
        after = rows[-1][0]
    op.create_index(
        "ix_tracking_metric_chunks_steps",
        "tracking_metric_chunks",
        ["run_pk", "key", "min_step", "max_step"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_tracking_metric_chunks_steps", table_name="tracking_metric_chunks")
    with op.batch_alter_table("tracking_metric_chunks") as batch:
        batch.drop_column("max_step")
        batch.drop_column("min_step")
