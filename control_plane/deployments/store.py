"""Reading and writing deployment rows inside a caller's transaction: the revision counter, locking,
loading a deployment with its variants, replacing its variants, and the audit record of a change.

Lock order of every deployments write: the revision row, then the deployment row, then (when a model
version is added) the registered model's row, then the audit head. The model registry's delete takes the
model row (then the version's row) and then reads the variants (through the guard), so the two never wait
on each other in a cycle.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from clients.aether.v1 import deployments_pb2 as pb
from clients.errors import NotFound
from control_plane.audit.log import record
from control_plane.deployments.messages import audit_state, deployment_message, variant_from_row
from control_plane.deployments.tables import DeploymentRow, DeploymentsRevisionRow, DeploymentVariantRow
from control_plane.deployments.traffic import VariantRecord

_REVISION_ROW_ID = 1


def now_us() -> int:
    return time.time_ns() // 1000


def lock_revision(session: Session) -> None:
    """Serializes deployments writers on PostgreSQL (SQLite write transactions already hold the lock)."""
    session.execute(
        select(DeploymentsRevisionRow.id)
        .where(DeploymentsRevisionRow.id == _REVISION_ROW_ID)
        .with_for_update()
    )


def bump_revision(session: Session) -> int:
    result = session.execute(
        update(DeploymentsRevisionRow)
        .where(DeploymentsRevisionRow.id == _REVISION_ROW_ID)
        .values(revision=DeploymentsRevisionRow.revision + 1)
        .returning(DeploymentsRevisionRow.revision)
    )
    revision = result.scalar_one_or_none()
    if revision is None:  # a database created from the models rather than the migrations
        session.add(DeploymentsRevisionRow(id=_REVISION_ROW_ID, revision=1))
        session.flush()
        revision = 1
    return revision


def current_revision(session: Session) -> int:
    revision = session.scalar(
        select(DeploymentsRevisionRow.revision).where(DeploymentsRevisionRow.id == _REVISION_ROW_ID)
    )
    return revision or 0


def find_deployment(session: Session, name: str, *, lock: bool = False) -> DeploymentRow | None:
    query = select(DeploymentRow).where(DeploymentRow.name == name)
    return session.scalar(query.with_for_update() if lock else query)


def require_deployment(session: Session, name: str, *, lock: bool = False) -> DeploymentRow:
    row = find_deployment(session, name, lock=lock)
    if row is None:
        raise NotFound(f"deployment {name!r} not found")
    return row


def variants_of(session: Session, deployment_ids: Sequence[int]) -> dict[int, list[VariantRecord]]:
    rows = session.scalars(
        select(DeploymentVariantRow)
        .where(DeploymentVariantRow.deployment_id.in_(deployment_ids))
        .order_by(DeploymentVariantRow.deployment_id, DeploymentVariantRow.position)
    )
    out: dict[int, list[VariantRecord]] = {i: [] for i in deployment_ids}
    for row in rows:
        out[row.deployment_id].append(variant_from_row(row))
    return out


def load(session: Session, name: str, *, lock: bool = False) -> tuple[DeploymentRow, list[VariantRecord]]:
    row = require_deployment(session, name, lock=lock)
    return row, variants_of(session, [row.id])[row.id]


def replace_variants(session: Session, row: DeploymentRow, variants: Sequence[VariantRecord]) -> None:
    session.execute(delete(DeploymentVariantRow).where(DeploymentVariantRow.deployment_id == row.id))
    for position, variant in enumerate(variants):
        session.add(
            DeploymentVariantRow(
                deployment_id=row.id,
                name=variant.name,
                model_name=variant.model_name,
                version=variant.version,
                role=variant.role.value,
                traffic_percent=variant.traffic_percent,
                position=position,
            )
        )
    session.flush()


def commit_change(
    session: Session,
    row: DeploymentRow,
    variants: Sequence[VariantRecord],
    *,
    action: str,
    actor: str,
    before: pb.Deployment | None,
) -> pb.Deployment:
    """Moves the deployment's plan revision and the global revision on, and audits the change; returns
    the deployment as it now is."""
    row.plan_revision = bump_revision(session)  # globally increasing, so also per deployment
    row.updated_at_us = max(now_us(), row.updated_at_us + 1)
    session.flush()
    after = deployment_message(row, variants)
    record(
        session,
        actor=actor,
        action=action,
        object_type="deployment",
        object_id=row.name,
        before=None if before is None else audit_state(before),
        after=audit_state(after),
    )
    return after
