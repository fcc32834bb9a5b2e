"""Artifact URIs kept by versions before 2026-12-05 lose their credentials: since then a model version's
``artifact_uri`` and a run artifact's ``uri`` are stored without them (``clients.uris.redact_uri``), and
older rows were only redacted when read. Rewriting them keeps secrets out of the database itself (its
files, dumps and backups); the redacted URI names the same object and opens with the reader's own
credentials, as new rows do.

Downgrading keeps the redacted URIs: the credentials are gone for good.

Revision ID: 0013_redact_kept_uris
Revises: 0012_tracking_log_senders
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from clients.uris import redact_uri

revision: str = "0013_redact_kept_uris"
down_revision: str | None = "0012_tracking_log_senders"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: A URI can carry credentials only in its userinfo (``…@``) or its query (``?…``).
_MAY_HOLD_CREDENTIALS = ("%@%", "%?%")


def _redact(
    table: sa.TableClause, uri: sa.ColumnClause[str], keys: Sequence[sa.ColumnClause[object]]
) -> None:
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(*keys, uri).where(sa.or_(*(uri.like(pattern) for pattern in _MAY_HOLD_CREDENTIALS)))
    ).all()
    for row in rows:
        kept = str(row[-1])
        redacted = redact_uri(kept)
        if redacted != kept:
            where = sa.and_(*(key == value for key, value in zip(keys, row[:-1], strict=True)))
            connection.execute(sa.update(table).where(where).values({uri.name: redacted}))


def upgrade() -> None:
    versions = sa.table("model_versions", sa.column("id", sa.Integer), sa.column("artifact_uri", sa.Text))
    _redact(versions, versions.c.artifact_uri, [versions.c.id])
    artifacts = sa.table(
        "tracking_artifacts",
        sa.column("run_pk", sa.Integer),
        sa.column("name", sa.String),
        sa.column("uri", sa.Text),
    )
    _redact(artifacts, artifacts.c.uri, [artifacts.c.run_pk, artifacts.c.name])


def downgrade() -> None:
    pass  # the credentials cannot come back (see the module's docstring)
