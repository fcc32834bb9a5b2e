"""Conversion of registry rows to wire messages. The aliases of versions live in their own table; they
are loaded for a whole page of versions in one query, never one query per version, so reading stays
a constant number of round trips."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from google.protobuf import json_format
from sqlalchemy import select
from sqlalchemy.orm import Session

from clients.aether.v1 import model_registry_pb2 as pb
from clients.uris import redact_uri
from control_plane.db.strings import byte_order
from control_plane.model_registry.approval import to_proto
from control_plane.model_registry.tables import (
    ModelAliasRow,
    ModelVersionRow,
    RegisteredModelRow,
)


def _tensors_to_json(tensors: Sequence[pb.TensorSpec]) -> list[dict[str, Any]]:
    return [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in tensors]


def signature_to_json(signature: pb.ModelSignature) -> dict[str, Any]:
    data: dict[str, Any] = {
        "inputs": _tensors_to_json(signature.inputs),
        "outputs": _tensors_to_json(signature.outputs),
    }
    if signature.imputes_missing:  # only when set: rows written before the field read the same
        data["imputes_missing"] = True
    if signature.classes:
        data["classes"] = list(signature.classes)
    return data


def _tensors_from_json(tensors: list[dict[str, Any]]) -> list[pb.TensorSpec]:
    # Built field by field: json_format.ParseDict costs ~100 µs per signature, on every get and list.
    return [pb.TensorSpec(name=t["name"], dtype=t["dtype"], shape=t["shape"]) for t in tensors]


def signature_from_json(data: dict[str, Any]) -> pb.ModelSignature:
    return pb.ModelSignature(
        inputs=_tensors_from_json(data.get("inputs", [])),
        outputs=_tensors_from_json(data.get("outputs", [])),
        imputes_missing=bool(data.get("imputes_missing", False)),
        classes=[str(c) for c in data.get("classes", [])],
    )


def aliases_of_versions(session: Session, version_ids: Sequence[int]) -> dict[int, list[str]]:
    aliases: dict[int, list[str]] = defaultdict(list)
    if not version_ids:
        return aliases
    rows = session.execute(
        select(ModelAliasRow.model_version_id, ModelAliasRow.alias)
        .where(ModelAliasRow.model_version_id.in_(version_ids))
        .order_by(byte_order(ModelAliasRow.alias))
    )
    for version_id, alias in rows:
        aliases[version_id].append(alias)
    return aliases


def aliases_of_models(session: Session, model_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    aliases: dict[int, dict[str, int]] = defaultdict(dict)
    if not model_ids:
        return aliases
    rows = session.execute(
        select(ModelAliasRow.model_id, ModelAliasRow.alias, ModelVersionRow.version)
        .join(ModelVersionRow, ModelVersionRow.id == ModelAliasRow.model_version_id)
        .where(ModelAliasRow.model_id.in_(model_ids))
    )
    for model_id, alias, version in rows:
        aliases[model_id][alias] = version
    return aliases


def _fill(field: MutableMapping[str, Any], values: Mapping[str, Any]) -> None:
    # Item by item: a map passed to a message constructor goes through the slow generic
    # MutableMapping.update, which doubles the cost of building a message on every list call.
    for key, value in values.items():
        field[key] = value


def model_message(
    row: RegisteredModelRow, aliases: dict[str, int], latest_version: int = 0
) -> pb.RegisteredModel:
    """``latest_version``: the highest version the model has now (0: none), which ``get_version`` without
    a number returns. Not the row's ``latest_version``, the highest number ever given out: after the
    newest version's delete that one named a version that no longer exists."""
    message = pb.RegisteredModel(
        name=row.name,
        description=row.description,
        latest_version=latest_version,
        created_at_us=row.created_at_us,
        updated_at_us=row.updated_at_us,
    )
    _fill(message.tags, row.tags)
    _fill(message.aliases, aliases)
    return message


def version_message(model_name: str, row: ModelVersionRow, aliases: list[str]) -> pb.ModelVersion:
    message = pb.ModelVersion(
        model_name=model_name,
        version=row.version,
        run_id=row.run_id,
        # Redacted again on the way out: a row written before artifact URIs were kept without credentials
        # may still hold some, and this message reaches clients, the audit log and deployment plans.
        artifact=pb.ArtifactRef(
            sha256=row.artifact_sha256, size=row.artifact_size, uri=redact_uri(row.artifact_uri)
        ),
        signature=signature_from_json(row.signature),
        dataset=pb.DatasetInfo(hash=row.dataset_hash, query=row.dataset_query),
        feature_refs=row.feature_refs,
        git_commit=row.git_commit,
        description=row.description,
        approval=pb.ApprovalRecord(
            status=to_proto(row.approval_status),
            actor=row.approval_actor,
            reason=row.approval_reason,
            decided_at_us=row.approval_at_us,
        ),
        aliases=aliases,
        created_by=row.created_by,
        created_at_us=row.created_at_us,
        updated_at_us=row.updated_at_us,
    )
    _fill(message.hyperparameters, row.hyperparameters)
    _fill(message.metrics, row.metrics)
    return message


def version_messages(
    session: Session, model_name: str, rows: Sequence[ModelVersionRow]
) -> list[pb.ModelVersion]:
    """Messages for versions of one model, with their aliases (one query for all of them)."""
    aliases = aliases_of_versions(session, [row.id for row in rows])
    return [version_message(model_name, row, aliases.get(row.id, [])) for row in rows]


def audit_state(message: pb.ModelVersion | pb.RegisteredModel) -> dict[str, Any]:
    """A message as the JSON object the audit log stores before and after a change."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)
