"""Stops the model registry from deleting a model version that a deployment serves, and names those
deployments in the version's lineage (``aetherctl lineage MODEL VERSION``)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.db.strings import byte_order
from control_plane.deployments.tables import DeploymentRow, DeploymentVariantRow
from control_plane.model_registry.guards import DEPLOYMENT, ModelUser


class DeploymentModelGuard:
    """A :class:`~control_plane.model_registry.guards.ModelReferenceGuard` backed by the deployments
    tables; it reads inside the registry's transaction, so a deployment committed before the delete's
    check is always seen."""

    def references(self, session: Session, model: str, version: int | None) -> list[ModelUser]:
        query = (
            select(DeploymentRow.name, DeploymentVariantRow)
            .join(DeploymentRow, DeploymentRow.id == DeploymentVariantRow.deployment_id)
            .where(DeploymentVariantRow.model_name == model)
            .order_by(byte_order(DeploymentRow.name), DeploymentVariantRow.position)
        )
        if version is not None:
            query = query.where(DeploymentVariantRow.version == version)
        users = []
        for name, variant in session.execute(query):
            detail = f"variant {variant.name} ({variant.role}, {variant.traffic_percent:g}% traffic)"
            if version is None:
                detail = f"version {variant.version}: {detail}"
            users.append(ModelUser(DEPLOYMENT, name, detail))
        return users
