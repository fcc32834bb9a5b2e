"""ORM tables of control_plane.deployments (registered on control_plane.db.models.Base).

Variants name their model version by (model name, version) rather than by a foreign key into the model
registry's tables: those come from another migration branch, so the deployments core checks the version
in code (it must be Approved) and the registry asks :class:`~control_plane.deployments.model_guard.
DeploymentModelGuard` before deleting a version; the (model, version) index serves that question."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db.models import NAME_LENGTH, ROW_ID, Base
from control_plane.db.strings import byte_ordered_name

ACTOR_LENGTH = 128
ROLE_LENGTH = 16
SALT_LENGTH = 256


class DeploymentRow(Base):
    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True)
    name: Mapped[str] = mapped_column(byte_ordered_name(NAME_LENGTH), unique=True)
    description: Mapped[str] = mapped_column(Text)
    routing_salt: Mapped[str] = mapped_column(String(SALT_LENGTH))
    #: ``ServingConfig`` / ``CanaryPolicy`` / ``CanaryState`` in protobuf JSON form.
    serving: Mapped[dict[str, Any]] = mapped_column(JSON)
    canary_policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    canary_state: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: Increases on every change of this deployment (the data plane reuses a plan whose revision it has).
    plan_revision: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    updated_at_us: Mapped[int] = mapped_column(BigInteger)


class DeploymentVariantRow(Base):
    __tablename__ = "deployment_variants"
    __table_args__ = (
        UniqueConstraint("deployment_id", "name", name="uq_deployment_variants_deployment_name"),
        Index("ix_deployment_variants_model", "model_name", "version"),
    )

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ROW_ID, ForeignKey("deployments.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    model_name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    version: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(ROLE_LENGTH))  # primary | canary | shadow
    traffic_percent: Mapped[float] = mapped_column(Float)
    position: Mapped[int] = mapped_column(Integer)  # order within the deployment, as created


class DeploymentsRevisionRow(Base):
    """One row counting deployment mutations: a plan watcher in any process compares one integer."""

    __tablename__ = "deployments_revision"

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger)
