"""Declarative apply of a whole definition set: each entity and view is compared with what is stored
and created, versioned or edited in place. It runs inside the caller's transaction, so the steps are
computed by doing them: a dry run or any error rolls everything back and nothing is half-applied.

Whether single events can keep a rule on an aggregated feature (``aggregated_rules.py``) is checked
where a rule is set: on new views, new versions and rule edits, not on a view the file leaves as stored.
A view stored before that check existed may hold a rule it refuses; checking every view of the file
made re-applying that view's unchanged YAML fail, dry run or not, and every apply of unrelated changes
in the same file with it. A new version that carries such a rule on is refused, saying that the stored
rule is the one to fix."""

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
    check_aggregated_rule,
    validate_entity,
    validate_metadata,
    validate_rule,
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
        path = f"views[{index}].spec"
        validate_spec(_aggregated_rules_cleared(view.spec), path)  # those are checked by _apply_view
        for feature_index in _aggregated_features(view.spec).values():
            feature = view.spec.features[feature_index]
            validate_rule(
                feature.validation, feature.value_type, f"{path}.features[{feature_index}].validation"
            )
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


def _aggregated_features(spec: pb.FeatureViewSpec) -> dict[str, int]:
    """The index in ``spec.features`` of each aggregation's output feature, by name."""
    index = {feature.name: i for i, feature in enumerate(spec.features)}
    return {a.output: index[a.output] for a in spec.aggregations if a.output in index}


def _aggregated_rules_cleared(spec: pb.FeatureViewSpec) -> pb.FeatureViewSpec:
    """``spec`` without the rules of its aggregated features, which ``validate_spec`` would check against
    what events can keep wherever they stand (see the module docstring)."""
    cleared = pb.FeatureViewSpec()
    cleared.CopyFrom(spec)
    for index in _aggregated_features(spec).values():
        cleared.features[index].ClearField("validation")
    return cleared


def _check_aggregated_rules(
    spec: pb.FeatureViewSpec, path: str, stored: pb.FeatureViewSpec | None, version: int, *, edited: bool
) -> None:
    """Refuses a rule on an aggregated feature that single events cannot keep: every such rule of a new
    view or version, only the changed ones with ``edited`` (a rule edit in place). A rule the stored
    ``version`` holds too was stored before such rules were refused: the error says to fix it."""
    before = {} if stored is None else {feature.name: feature.validation for feature in stored.features}
    features = _aggregated_features(spec)
    for aggregation in spec.aggregations:
        index = features[aggregation.output]
        rule = spec.features[index].validation
        kept = aggregation.output in before and before[aggregation.output] == rule
        if edited and kept:
            continue
        try:
            check_aggregated_rule(aggregation, rule, f"{path}.features[{index}].validation")
        except InvalidArgument as error:
            if not kept:
                raise
            raise InvalidArgument(
                f"{error.message}; version {version} stores this rule, from before such rules were refused:"
                " fix the stored rule with UpdateValidation or a rule edit in this file"
            ) from None


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
    path = f"views[{index}].spec"
    validate_with_entity(spec, (key["name"] for key in entity.join_keys), path)
    row = store.find_view(session, spec.name)
    if row is None:
        _check_aggregated_rules(spec, path, None, 0, edited=False)
        _, first = store.insert_view(session, spec, view.metadata, entity, now)
        summary = f"entity {spec.entity}, {len(spec.features)} features"
        return pb.PlanStep(
            kind=FEATURE_VIEW, name=spec.name, action=pb.CREATE, version=first.version, changes=[summary]
        )
    # Compared with the version served (the latest not retired, as GetFeatureView shows), not the latest
    # given out: after a rollback (the newest retired) a file back at the served definition was compared
    # with the retired one and made a copy of the served version, empty, that latest readers moved to.
    versions = store.versions_of(session, row)
    latest = store.latest_servable(versions) or versions[-1]
    latest_spec = store.spec_from_json(latest.spec)
    meta_changes = metadata_changes(store.metadata_message(row), view.metadata)
    if meta_changes:
        store.set_metadata(row, view.metadata, now)
    reasons = new_version_reasons(latest_spec, latest.status == store.Status.RETIRED, spec)
    if reasons:
        _check_aggregated_rules(spec, path, latest_spec, latest.version, edited=False)
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
        _check_aggregated_rules(spec, path, latest_spec, latest.version, edited=True)
        store.set_feature_details(latest, spec, now)
    changes = meta_changes + detail_changes
    action = pb.UPDATE_METADATA if changes else pb.NO_CHANGE
    return pb.PlanStep(
        kind=FEATURE_VIEW, name=spec.name, action=action, version=latest.version, changes=changes
    )
