"""Declarative apply of a whole definition set: each entity and view is compared with what is stored
and created, versioned or edited in place. It runs inside the caller's transaction, so the steps are
computed by doing them: a dry run or any error rolls everything back and nothing is half-applied."""

from __future__ import annotations

from sqlalchemy.orm import Session

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.errors import InvalidArgument
from clients.value_types import type_name
from control_plane.features import store
from control_plane.features.changes import (
    entity_changes,
    feature_detail_changes,
    metadata_changes,
    new_version_reasons,
    same_join_keys,
)
from control_plane.features.validation import (
    validate_entity,
    validate_metadata,
    validate_spec,
    validate_with_entity,
)

ENTITY = "entity"
FEATURE_VIEW = "feature_view"


def validate_request(request: pb.ApplyRequest) -> None:
    """Every check that needs no database, each error prefixed with the item's path in the request."""
    seen: dict[str, int] = {}
    for index, entity in enumerate(request.entities):
        validate_entity(entity, f"entities[{index}]")
        if entity.name in seen:
            raise InvalidArgument(
                f"entities[{index}].name: duplicate entity {entity.name!r}"
                f" (also entities[{seen[entity.name]}])"
            )
        seen[entity.name] = index
    seen = {}
    for index, view in enumerate(request.views):
        validate_spec(view.spec, f"views[{index}].spec")
        validate_metadata(view.metadata, f"views[{index}].metadata")
        if view.spec.name in seen:
            raise InvalidArgument(
                f"views[{index}].spec.name: duplicate feature view {view.spec.name!r}"
                f" (also views[{seen[view.spec.name]}])"
            )
        seen[view.spec.name] = index


def apply_definitions(session: Session, request: pb.ApplyRequest, now: int) -> list[pb.PlanStep]:
    """Carries out ``request`` in ``session`` and returns the plan, one step per entity then per view."""
    validate_request(request)
    steps = [_apply_entity(session, index, entity, now) for index, entity in enumerate(request.entities)]
    steps += [_apply_view(session, index, view, now) for index, view in enumerate(request.views)]
    return steps


def _keys(entity: pb.Entity) -> str:
    return ", ".join(f"{key.name} ({type_name(key.value_type)})" for key in entity.join_keys)


def _apply_entity(session: Session, index: int, entity: pb.Entity, now: int) -> pb.PlanStep:
    row = store.find_entity(session, entity.name)
    if row is None:
        store.insert_entity(session, entity, now)
        return pb.PlanStep(
            kind=ENTITY, name=entity.name, action=pb.CREATE, changes=[f"join keys: {_keys(entity)}"]
        )
    stored = store.entity_message(row)
    if not same_join_keys(stored, entity):
        raise InvalidArgument(
            f"entities[{index}].join_keys: join keys of existing entity {entity.name!r} cannot change"
            f" ({_keys(stored)} -> {_keys(entity)}); entities are not versioned"
        )
    changes = entity_changes(stored, entity)
    if not changes:
        return pb.PlanStep(kind=ENTITY, name=entity.name, action=pb.NO_CHANGE)
    row.description = entity.description
    row.updated_at_us = now
    return pb.PlanStep(kind=ENTITY, name=entity.name, action=pb.UPDATE_METADATA, changes=changes)


def _apply_view(session: Session, index: int, view: pb.FeatureView, now: int) -> pb.PlanStep:
    spec = view.spec
    entity = store.find_entity(session, spec.entity)
    if entity is None:
        raise InvalidArgument(f"views[{index}].spec.entity: entity {spec.entity!r} not found")
    validate_with_entity(spec, (key["name"] for key in entity.join_keys), f"views[{index}].spec")
    row = store.find_view(session, spec.name)
    if row is None:
        _, first = store.insert_view(session, spec, view.metadata, entity, now)
        summary = f"entity {spec.entity}, {len(spec.features)} features"
        return pb.PlanStep(
            kind=FEATURE_VIEW, name=spec.name, action=pb.CREATE, version=first.version, changes=[summary]
        )
    latest = store.latest_version(session, row)
    latest_spec = store.spec_from_json(latest.spec)
    meta_changes = metadata_changes(store.metadata_message(row), view.metadata)
    if meta_changes:
        store.set_metadata(row, view.metadata, now)
    reasons = new_version_reasons(latest_spec, latest.status == store.Status.RETIRED, spec)
    if reasons:
        created = store.insert_version(session, row, spec, entity, now)
        return pb.PlanStep(
            kind=FEATURE_VIEW,
            name=spec.name,
            action=pb.NEW_VERSION,
            version=created.version,
            changes=reasons + meta_changes,
        )
    detail_changes = feature_detail_changes(latest_spec, spec)
    if detail_changes:
        store.set_feature_details(latest, spec, now)
    changes = meta_changes + detail_changes
    action = pb.UPDATE_METADATA if changes else pb.NO_CHANGE
    return pb.PlanStep(
        kind=FEATURE_VIEW, name=spec.name, action=action, version=latest.version, changes=changes
    )
