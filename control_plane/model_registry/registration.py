"""Writing a new registered model's row, and a new model version: its row, its feature references and its
audit entry, inside the registration's transaction (after every check passed and the model row was
locked)."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from clients.aether.v1 import model_registry_pb2 as pb
from clients.uris import redact_uri
from control_plane.audit.log import record
from control_plane.db import pages
from control_plane.model_registry import messages
from control_plane.model_registry.approval import Approval
from control_plane.model_registry.queries import now_us
from control_plane.model_registry.tables import (
    ModelVersionFeatureRow,
    ModelVersionRow,
    RegisteredModelRow,
    RegisteredModelTombstoneRow,
)
from control_plane.model_registry.validation import FeatureRef


def insert_model(session: Session, name: str, description: str, tags: dict[str, str]) -> RegisteredModelRow:
    """A new model row; a name deleted before numbers its versions on from where it stopped."""
    now = now_us()
    last_version = session.scalar(
        select(RegisteredModelTombstoneRow.last_version).where(RegisteredModelTombstoneRow.name == name)
    )
    if last_version is not None:  # the model row carries the count on from here
        session.execute(delete(RegisteredModelTombstoneRow).where(RegisteredModelTombstoneRow.name == name))
    row = RegisteredModelRow(
        name=name,
        description=description,
        tags=tags,
        latest_version=last_version or 0,
        created_at_us=now,
        updated_at_us=now,
    )
    session.add(row)
    session.flush()
    return row


def insert_version(
    session: Session,
    model: RegisteredModelRow,
    request: pb.CreateModelVersionRequest,
    refs: list[FeatureRef],
    uri: str,
    size: int,
    actor: str,
) -> pb.ModelVersion:
    """Gives the next number of ``model`` (whose row the caller locked) to a new version."""
    name = model.name
    now = now_us()
    model.latest_version += 1
    model.updated_at_us = max(now, model.updated_at_us + 1)  # moves its cached message's stamp
    row = ModelVersionRow(
        model_id=model.id,
        version=model.latest_version,
        run_id=request.run_id,
        artifact_sha256=request.artifact_sha256,
        artifact_size=size,
        artifact_uri=redact_uri(uri),  # a kept record never holds credentials (the store's are its own)
        signature=messages.signature_to_json(request.signature),
        feature_refs=[str(ref) for ref in refs],
        dataset_hash=request.dataset.hash,
        dataset_query=request.dataset.query,
        hyperparameters=dict(request.hyperparameters),
        metrics=dict(request.metrics),
        git_commit=request.git_commit,
        description=request.description,
        approval_status=Approval.PENDING.value,
        approval_actor="",
        approval_reason="",
        approval_at_us=0,
        created_by=actor,
        created_at_us=now,
        updated_at_us=now,
    )
    session.add(row)
    session.flush()
    session.add_all(
        ModelVersionFeatureRow(
            model_version_id=row.id,
            position=position,
            view_name=ref.view,
            view_version=ref.version,
            feature=ref.feature,
        )
        for position, ref in enumerate(refs)
    )
    message = messages.version_message(name, row, [])
    pages.check_item(message, f"model {name!r} version {row.version}")  # raised: nothing is committed
    record(
        session,
        actor=actor,
        action="create",
        object_type="model_version",
        object_id=f"{name}/{row.version}",
        before=None,
        after=messages.audit_state(message),
    )
    return message
