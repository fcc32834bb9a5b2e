"""Listed names are collated "C" on PostgreSQL, so that their unique indexes serve the listings' order.

Listings by name order and page by ``name COLLATE "C"`` (byte order, as SQLite compares text:
``control_plane.db.strings.byte_order``). On a database created with another collation (ICU, ``en_US``)
a name's unique index is built in that collation and serves neither that ORDER BY nor the keyset's
``name COLLATE "C" > :last``, so every page read and sorted the whole table. Declared ``COLLATE "C"``,
the column's index is in byte order and a page is an index scan cut at its LIMIT. Equality (``name =
:name``, what uniqueness means) is the same in every deterministic collation, so no existing pair of
names becomes a duplicate. SQLite compares these columns by bytes already: nothing changes there.

PostgreSQL rebuilds each column's unique index (the table itself is not rewritten), holding an exclusive
lock on the table meanwhile.

Revision ID: 0025_byte_ordered_names
Revises: 0024_64bit_row_ids
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0025_byte_ordered_names"
down_revision: str | None = "0024_64bit_row_ids"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The tables whose ``name`` column (``VARCHAR(128)``, unique) is listed and paged by name.
_TABLES = ("entities", "feature_views", "registered_models", "tracking_experiments", "deployments")


def _collate(collation: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite compares these columns by their bytes (BINARY) already
    for table in _TABLES:
        op.execute(f'ALTER TABLE "{table}" ALTER COLUMN "name" TYPE VARCHAR(128) COLLATE "{collation}"')


def upgrade() -> None:
    _collate("C")


def downgrade() -> None:
    _collate("default")
