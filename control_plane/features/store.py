"""Session-level reads and writes of registry rows, and their conversion to wire messages. Shared by the
registry's single-call operations and by Apply, which runs many of them in one transaction."""

from __future__ import annotations

import time
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from google.protobuf import json_format
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2
from clients.errors import NotFound
from clients.value_types import numpy_dtype_name
from control_plane.db.models import (
    EntityRow,
    FeatureViewOnlineCleanupRow,
    FeatureViewRow,
    FeatureViewTombstoneRow,
    FeatureViewVersionRow,
)
from kernels.fingerprint import schema_fingerprint


class Status(StrEnum):
    ACTIVE = "ACTIVE"
    DEPRECATED = "DEPRECATED"
    RETIRED = "RETIRED"


SERVABLE = (Status.ACTIVE, Status.DEPRECATED)


def now_us() -> int:
    return time.time_ns() // 1000


def fingerprint_of(spec: pb.FeatureViewSpec, version: int) -> int:
    columns = [(feature.name, numpy_dtype_name(feature.value_type)) for feature in spec.features]
    return schema_fingerprint(spec.name, version, columns)


# -- conversions ---------------------------------------------------------------------------------------


def spec_to_json(spec: pb.FeatureViewSpec) -> dict[str, Any]:
    return json_format.MessageToDict(spec, preserving_proto_field_name=True)


def spec_from_json(data: dict[str, Any]) -> pb.FeatureViewSpec:
    return json_format.ParseDict(data, pb.FeatureViewSpec())


def entity_message(row: EntityRow) -> pb.Entity:
    return pb.Entity(
        name=row.name,
        join_keys=[pb.JoinKey(name=key["name"], value_type=key["value_type"]) for key in row.join_keys],
        description=row.description,
        created_at_us=row.created_at_us,
    )


def metadata_message(view: FeatureViewRow) -> pb.FeatureViewMetadata:
    return pb.FeatureViewMetadata(description=view.description, owner=view.owner, tags=view.tags)


def view_message(view: FeatureViewRow, version: FeatureViewVersionRow) -> pb.FeatureView:
    return pb.FeatureView(
        spec=spec_from_json(version.spec),
        metadata=metadata_message(view),
        version=version.version,
        status=version.status,
        schema_fingerprint=int(version.schema_fingerprint, 16),
        latest_version=view.latest_version,
        created_at_us=version.created_at_us,
        updated_at_us=max(view.updated_at_us, version.updated_at_us),
    )


# -- reads ---------------------------------------------------------------------------------------------


def find_entity(session: Session, name: str) -> EntityRow | None:
    return session.scalar(select(EntityRow).where(EntityRow.name == name))


def require_entity(session: Session, name: str) -> EntityRow:
    row = find_entity(session, name)
    if row is None:
        raise NotFound(f"entity {name!r} not found")
    return row


def find_view(session: Session, name: str) -> FeatureViewRow | None:
    return session.scalar(select(FeatureViewRow).where(FeatureViewRow.name == name))


def require_view(session: Session, name: str) -> FeatureViewRow:
    row = find_view(session, name)
    if row is None:
        raise NotFound(f"feature view {name!r} not found")
    return row


def versions_of(session: Session, view: FeatureViewRow) -> Sequence[FeatureViewVersionRow]:
    """Every version of ``view``, oldest first."""
    query = (
        select(FeatureViewVersionRow)
        .where(FeatureViewVersionRow.view_id == view.id)
        .order_by(FeatureViewVersionRow.version)
    )
    return session.scalars(query).all()


def latest_servable(versions: Sequence[FeatureViewVersionRow]) -> FeatureViewVersionRow | None:
    servable = [row for row in versions if row.status in SERVABLE]
    return servable[-1] if servable else None


def require_version(session: Session, view: FeatureViewRow, version: int) -> FeatureViewVersionRow:
    """Version ``version`` of ``view``; 0 means the latest version that is not retired."""
    if version == 0:
        row = latest_servable(versions_of(session, view))
        if row is None:
            raise NotFound(f"feature view {view.name!r} has no version that is not retired")
        return row
    # Versions are numbered up to the latest given out; a larger one (say 2**31, beyond the version
    # column's 32 bits, which PostgreSQL refuses to compare) cannot exist and is not looked up.
    found = None
    if 0 < version <= view.latest_version:
        found = session.scalar(
            select(FeatureViewVersionRow).where(
                FeatureViewVersionRow.view_id == view.id, FeatureViewVersionRow.version == version
            )
        )
    if found is None:
        raise NotFound(
            f"feature view {view.name!r} has no version {version} (latest is {view.latest_version})"
        )
    return found


def latest_version(session: Session, view: FeatureViewRow) -> FeatureViewVersionRow:
    return require_version(session, view, view.latest_version)


def views_using_entity(session: Session, entity: EntityRow) -> list[str]:
    query = (
        select(FeatureViewRow.name)
        .join(FeatureViewVersionRow, FeatureViewVersionRow.view_id == FeatureViewRow.id)
        .where(FeatureViewVersionRow.entity_id == entity.id)
        .distinct()
    )
    # Sorted here, by code point as every listing by name is (``byte_order``): PostgreSQL refuses an ORDER
    # BY expression (``name COLLATE "C"``) that a SELECT DISTINCT does not select.
    return sorted(session.scalars(query).all())


# -- writes --------------------------------------------------------------------------------------------


def insert_entity(session: Session, entity: pb.Entity, now: int) -> EntityRow:
    row = EntityRow(
        name=entity.name,
        join_keys=[
            {"name": key.name, "value_type": types_pb2.ValueType.Name(key.value_type)}
            for key in entity.join_keys
        ],
        description=entity.description,
        created_at_us=now,
        updated_at_us=now,
    )
    session.add(row)
    session.flush()
    return row


def insert_view(
    session: Session, spec: pb.FeatureViewSpec, metadata: pb.FeatureViewMetadata, entity: EntityRow, now: int
) -> tuple[FeatureViewRow, FeatureViewVersionRow]:
    # A name's versions are never reused, even after a delete: the version names the online keys, the
    # offline-store folder and the schema fingerprint, which may still hold the deleted view's data.
    tombstone = session.get(FeatureViewTombstoneRow, spec.name)
    last_version = 0 if tombstone is None else tombstone.last_version
    if tombstone is not None:
        session.delete(tombstone)  # the view row carries the count on from here
    view = FeatureViewRow(
        name=spec.name,
        description=metadata.description,
        owner=metadata.owner,
        tags=dict(metadata.tags),
        latest_version=last_version,
        created_at_us=now,
        updated_at_us=now,
    )
    session.add(view)
    session.flush()
    return view, insert_version(session, view, spec, entity, now)


def insert_version(
    session: Session, view: FeatureViewRow, spec: pb.FeatureViewSpec, entity: EntityRow, now: int
) -> FeatureViewVersionRow:
    number = view.latest_version + 1
    row = FeatureViewVersionRow(
        view_id=view.id,
        version=number,
        entity_id=entity.id,
        spec=spec_to_json(spec),
        status=Status.ACTIVE.value,
        schema_fingerprint=f"{fingerprint_of(spec, number):016x}",
        created_at_us=now,
        updated_at_us=now,
    )
    view.latest_version = number
    view.updated_at_us = now
    session.add(row)
    session.flush()
    return row


def delete_view(session: Session, view: FeatureViewRow, now: int) -> None:
    """Deletes ``view`` with all its versions, remembering the highest version it reached so that a view
    created again under its name continues from there, and queueing each version's online keys for
    removal (``online_cleanup``; the offline store keeps their data)."""
    for row in versions_of(session, view):
        entity = session.get(EntityRow, row.entity_id)
        assert entity is not None  # the foreign key refuses to drop an entity a version uses
        # merge: a name deleted before tombstones existed (migration 0017) may have reused a version.
        session.merge(
            FeatureViewOnlineCleanupRow(
                name=view.name, version=row.version, entity=entity.name, deleted_at_us=now,
                done_at_us=None, keys_removed=0,
            )
        )  # fmt: skip
    session.execute(delete(FeatureViewVersionRow).where(FeatureViewVersionRow.view_id == view.id))
    session.add(FeatureViewTombstoneRow(name=view.name, last_version=view.latest_version))
    session.delete(view)
    session.flush()


def set_metadata(view: FeatureViewRow, metadata: pb.FeatureViewMetadata, now: int) -> None:
    view.description = metadata.description
    view.owner = metadata.owner
    view.tags = dict(metadata.tags)
    view.updated_at_us = now


def set_feature_details(version: FeatureViewVersionRow, source: pb.FeatureViewSpec, now: int) -> None:
    """Copies feature descriptions and validation rules from ``source`` into the stored spec (the only
    parts of a version that may change); features ``source`` lacks keep theirs."""
    spec = spec_from_json(version.spec)
    by_name = {feature.name: feature for feature in source.features}
    for feature in spec.features:
        replacement = by_name.get(feature.name)
        if replacement is not None:
            feature.description = replacement.description
            feature.validation.CopyFrom(replacement.validation)
    version.spec = spec_to_json(spec)  # a new object, so SQLAlchemy sees the JSON change
    version.updated_at_us = now
