"""SQLAlchemy 2 models of the metadata database. Portable types only (SQLite by default, PostgreSQL at
scale); timestamps are integer microseconds since the Unix epoch (UTC), so no time-zone handling differs
between back ends. Every schema change goes through a migration in ``migrations/versions``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from control_plane.db.strings import byte_ordered_name

# Named constraints: Alembic needs names to alter constraints later (SQLite batch mode, PostgreSQL).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

NAME_LENGTH = 128

#: The type of every generated id (an autoincrementing primary key) and of every column that holds one.
#: 64-bit, as the API's ids are: PostgreSQL's ``integer``/``serial`` stopped at 2**31 - 1, after which
#: each insert failed (quarantine ids and metric chunks advance per record and per logged batch). On
#: SQLite it stays ``INTEGER``: only an ``INTEGER PRIMARY KEY`` is the rowid (64-bit already) and so
#: numbered by the database, and a ``BIGINT`` primary key would not be.
ROW_ID = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class EntityRow(Base):
    __tablename__ = "entities"

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True)
    name: Mapped[str] = mapped_column(byte_ordered_name(NAME_LENGTH), unique=True)
    #: [{"name": ..., "value_type": <ValueType name>}, ...] in key order. Entities are not versioned: join
    #: keys never change once created.
    join_keys: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    description: Mapped[str] = mapped_column(Text)
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    updated_at_us: Mapped[int] = mapped_column(BigInteger)


class FeatureViewRow(Base):
    """The unversioned part of a feature view: its name and metadata."""

    __tablename__ = "feature_views"

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True)
    name: Mapped[str] = mapped_column(byte_ordered_name(NAME_LENGTH), unique=True)
    description: Mapped[str] = mapped_column(Text)
    owner: Mapped[str] = mapped_column(String(256))
    tags: Mapped[dict[str, str]] = mapped_column(JSON)
    latest_version: Mapped[int] = mapped_column(Integer)
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    updated_at_us: Mapped[int] = mapped_column(BigInteger)


class FeatureViewVersionRow(Base):
    """One immutable version of a view. ``spec`` holds the ``FeatureViewSpec`` in protobuf JSON form; of
    it only feature descriptions and validation rules may change after creation (they are not part of
    the value layout)."""

    __tablename__ = "feature_view_versions"
    __table_args__ = (UniqueConstraint("view_id", "version", name="uq_feature_view_versions_view_version"),)

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True)
    view_id: Mapped[int] = mapped_column(ROW_ID, ForeignKey("feature_views.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    # Also inside ``spec``; a column so the database refuses to drop an entity a version still uses.
    entity_id: Mapped[int] = mapped_column(ROW_ID, ForeignKey("entities.id", ondelete="RESTRICT"), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))  # ACTIVE | DEPRECATED | RETIRED
    #: 16 hex digits: the unsigned 64-bit fingerprint does not fit a signed BIGINT.
    schema_fingerprint: Mapped[str] = mapped_column(String(16))
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    updated_at_us: Mapped[int] = mapped_column(BigInteger)


class FeatureViewTombstoneRow(Base):
    """The highest version a deleted feature view reached. A view created again under the same name
    starts above it: a version number names its online keys, offline-store folder and schema
    fingerprint, so reusing one would serve and join the deleted view's data as the new view's."""

    __tablename__ = "feature_view_tombstones"

    name: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    last_version: Mapped[int] = mapped_column(Integer)


class FeatureViewOnlineCleanupRow(Base):
    """One version of a deleted feature view whose online values (Redis keys) are to be removed, or
    were: ``done_at_us`` is NULL while the background cleanup (``features/online_cleanup.py``) has not
    finished. The offline store keeps the version's data (training sets and lineage refer to it)."""

    __tablename__ = "feature_view_online_cleanups"

    name: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: The version's entity: its name is the start of every online key of the version.
    entity: Mapped[str] = mapped_column(String(NAME_LENGTH))
    deleted_at_us: Mapped[int] = mapped_column(BigInteger)
    done_at_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    keys_removed: Mapped[int] = mapped_column(BigInteger, default=0)


class RegistryRevisionRow(Base):
    """A single row counting registry mutations. Every mutation increments it in its own transaction,
    so a watcher in any process sees a change by comparing one integer."""

    __tablename__ = "registry_revision"

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger)
