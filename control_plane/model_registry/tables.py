"""ORM tables of control_plane.model_registry (registered on control_plane.db.models.Base).

A version's run is a plain indexed ``run_id`` column, not a foreign key: the tracking tables come from
another migration branch, so the registry checks the run exists in code. The feature references of a
version live in their own table, indexed by (view, version), so the reverse lineage query and the
feature registry's retire/delete guard read an index instead of scanning every version's JSON."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db.models import NAME_LENGTH, ROW_ID, Base
from control_plane.db.strings import byte_ordered_name

ACTOR_LENGTH = 128
RUN_ID_LENGTH = 64
SHA256_LENGTH = 64
DATASET_HASH_LENGTH = 128
GIT_COMMIT_LENGTH = 64
STATUS_LENGTH = 32


class RegisteredModelRow(Base):
    __tablename__ = "registered_models"

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True)
    name: Mapped[str] = mapped_column(byte_ordered_name(NAME_LENGTH), unique=True)
    description: Mapped[str] = mapped_column(Text)
    tags: Mapped[dict[str, str]] = mapped_column(JSON)
    #: The highest version number ever given out (deleted versions included), so numbers never repeat.
    #: Registrations lock this row and increment it, which is what keeps concurrent numbering gap-free.
    latest_version: Mapped[int] = mapped_column(Integer)
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    updated_at_us: Mapped[int] = mapped_column(BigInteger)


class RegisteredModelTombstoneRow(Base):
    """The highest version number a deleted registered model gave out. A model registered again under
    the same name continues above it: a version number names an artifact, an approval and audit entries
    (and a data plane keeps a loaded version by it), so a new "v1" read as the deleted one's."""

    __tablename__ = "registered_model_tombstones"

    name: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    last_version: Mapped[int] = mapped_column(Integer)


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),)

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True)
    model_id: Mapped[int] = mapped_column(ROW_ID, ForeignKey("registered_models.id", ondelete="RESTRICT"))
    version: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[str] = mapped_column(String(RUN_ID_LENGTH), index=True)  # "" = no run
    artifact_sha256: Mapped[str] = mapped_column(String(SHA256_LENGTH), index=True)
    artifact_size: Mapped[int] = mapped_column(BigInteger)
    artifact_uri: Mapped[str] = mapped_column(Text)
    #: {"inputs": [{"name", "dtype", "shape"}], "outputs": [...]}
    signature: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: ``view@version:feature`` in the model's input order. Also in ``model_version_features`` (indexed, for
    #: the reverse queries); kept here too so that reading a version needs no second query.
    feature_refs: Mapped[list[str]] = mapped_column(JSON)
    dataset_hash: Mapped[str] = mapped_column(String(DATASET_HASH_LENGTH))
    dataset_query: Mapped[str] = mapped_column(Text)
    hyperparameters: Mapped[dict[str, str]] = mapped_column(JSON)
    metrics: Mapped[dict[str, float]] = mapped_column(JSON)
    git_commit: Mapped[str] = mapped_column(String(GIT_COMMIT_LENGTH))
    description: Mapped[str] = mapped_column(Text)
    approval_status: Mapped[str] = mapped_column(String(STATUS_LENGTH))
    approval_actor: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    approval_reason: Mapped[str] = mapped_column(Text)
    approval_at_us: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    updated_at_us: Mapped[int] = mapped_column(BigInteger)


class ModelVersionFeatureRow(Base):
    """One feature reference ``view@version:feature`` of a model version, at its position in the list."""

    __tablename__ = "model_version_features"
    __table_args__ = (Index("ix_model_version_features_view", "view_name", "view_version"),)

    model_version_id: Mapped[int] = mapped_column(
        ROW_ID, ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    view_name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    view_version: Mapped[int] = mapped_column(Integer)
    feature: Mapped[str] = mapped_column(String(NAME_LENGTH))


class ModelAliasRow(Base):
    """A movable pointer (``champion``...) from a model's alias to one of its versions."""

    __tablename__ = "model_aliases"

    model_id: Mapped[int] = mapped_column(
        ROW_ID, ForeignKey("registered_models.id", ondelete="CASCADE"), primary_key=True
    )
    alias: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    model_version_id: Mapped[int] = mapped_column(
        ROW_ID, ForeignKey("model_versions.id", ondelete="CASCADE"), index=True
    )
    updated_at_us: Mapped[int] = mapped_column(BigInteger)
