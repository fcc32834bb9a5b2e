"""What differs between two definitions, as the human-readable lines an Apply plan prints. The split
decides versioning: any :func:`versioned_changes` line means a new version; the other functions list
edits made in place."""

from __future__ import annotations

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.value_types import type_name

_SHOWN_TEXT = 40


def _show(text: str) -> str:
    if not text:
        return "''"
    return text if len(text) <= _SHOWN_TEXT else text[: _SHOWN_TEXT - 3] + "..."


def _describe(aggregation: pb.Aggregation) -> str:
    return f"{aggregation.function} of {aggregation.column} over {aggregation.window_seconds}s"


def versioned_changes(old: pb.FeatureViewSpec, new: pb.FeatureViewSpec) -> list[str]:
    """Differences in the value layout or its computation: entity, features' names, types and order,
    source, TTL, aggregations (not their order). Empty when ``new`` can be served by ``old``'s version."""
    changes: list[str] = []
    if old.entity != new.entity:
        changes.append(f"entity: {old.entity} -> {new.entity}")
    changes += _feature_layout_changes(old, new)
    for field in ("kind", "uri", "timestamp_field"):
        before, after = getattr(old.source, field), getattr(new.source, field)
        if before != after:
            changes.append(f"source.{field}: {_show(before)} -> {_show(after)}")
    if old.ttl_seconds != new.ttl_seconds:
        changes.append(f"ttl: {old.ttl_seconds} -> {new.ttl_seconds}")
    changes += _aggregation_changes(old, new)
    return changes


def _feature_layout_changes(old: pb.FeatureViewSpec, new: pb.FeatureViewSpec) -> list[str]:
    before = {feature.name: feature.value_type for feature in old.features}
    after = {feature.name: feature.value_type for feature in new.features}
    changes = [f"feature {name}: removed" for name in before if name not in after]
    for name, value_type in after.items():
        if name not in before:
            changes.append(f"feature {name}: added ({type_name(value_type)})")
        elif before[name] != value_type:
            changes.append(f"feature {name}: dtype {type_name(before[name])} -> {type_name(value_type)}")
    if not changes and list(before) != list(after):
        changes.append(f"features: order {', '.join(before)} -> {', '.join(after)}")
    return changes


def _aggregation_changes(old: pb.FeatureViewSpec, new: pb.FeatureViewSpec) -> list[str]:
    before = {aggregation.output: aggregation for aggregation in old.aggregations}
    after = {aggregation.output: aggregation for aggregation in new.aggregations}
    changes = [f"aggregation {output}: removed" for output in before if output not in after]
    for output, aggregation in after.items():
        if output not in before:
            changes.append(f"aggregation {output}: added ({_describe(aggregation)})")
        elif before[output] != aggregation:
            changes.append(f"aggregation {output}: {_describe(before[output])} -> {_describe(aggregation)}")
    # Their order is not compared: the values are laid out in feature order (the materializer orders
    # the aggregations by their outputs), so listing them in another order changed nothing stored, and
    # made a new, empty version all the same.
    return changes


def metadata_changes(old: pb.FeatureViewMetadata, new: pb.FeatureViewMetadata) -> list[str]:
    changes: list[str] = []
    if old.description != new.description:
        changes.append(f"description: {_show(old.description)} -> {_show(new.description)}")
    if old.owner != new.owner:
        changes.append(f"owner: {_show(old.owner)} -> {_show(new.owner)}")
    for key in sorted(old.tags.keys() - new.tags.keys()):
        changes.append(f"tag {key}: removed")
    for key in sorted(new.tags):
        if key not in old.tags:
            changes.append(f"tag {key}: added ({_show(new.tags[key])})")
        elif old.tags[key] != new.tags[key]:
            changes.append(f"tag {key}: {_show(old.tags[key])} -> {_show(new.tags[key])}")
    return changes


def feature_detail_changes(old: pb.FeatureViewSpec, new: pb.FeatureViewSpec) -> list[str]:
    """Description and validation edits of the features both specs have (neither is versioned)."""
    before = {feature.name: feature for feature in old.features}
    changes: list[str] = []
    for feature in new.features:
        previous = before.get(feature.name)
        if previous is None:
            continue
        if previous.description != feature.description:
            changes.append(f"feature {feature.name}: description changed")
        if previous.validation != feature.validation:
            changes.append(f"feature {feature.name}: validation changed")
    return changes


def entity_changes(old: pb.Entity, new: pb.Entity) -> list[str]:
    """Description edits; join keys are compared by the caller, since they may not change at all."""
    if old.description != new.description:
        return [f"description: {_show(old.description)} -> {_show(new.description)}"]
    return []


def same_join_keys(old: pb.Entity, new: pb.Entity) -> bool:
    return [(key.name, key.value_type) for key in old.join_keys] == [
        (key.name, key.value_type) for key in new.join_keys
    ]


def new_version_reasons(
    latest: pb.FeatureViewSpec, latest_retired: bool, new: pb.FeatureViewSpec
) -> list[str]:
    """Why ``new`` needs a version after ``latest``; empty when it does not. A retired version can never
    serve again (versions are immutable, status included), so re-applying its spec makes a new one."""
    changes = versioned_changes(latest, new)
    if not changes and latest_retired:
        changes.append("latest version is retired")
    return changes
