"""Checks of entity and feature-view definitions. Every error is an ``InvalidArgument`` whose message
starts with the path of the offending field in the request (``spec.features[3].value_type: ...``;
``views[1].spec...`` inside an Apply), so callers can point at the line that caused it."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2
from clients.errors import InvalidArgument
from clients.uris import holds_credentials, redact_uri
from clients.value_types import type_name
from control_plane.db import pages
from control_plane.db.models import NAME_LENGTH
from control_plane.features.aggregated_rules import describe, rule_problem
from control_plane.features.durations import MAX_DURATION_S
from control_plane.offline.store import EVENT_TS, INGESTED_TS
from kernels.asof_join import MAX_TTL_US

NAME_PATTERN = re.compile(r"^[a-z_][a-z0-9_]*$")
FEATURE_TYPES = frozenset(
    {types_pb2.FLOAT32, types_pb2.FLOAT64, types_pb2.INT32, types_pb2.INT64, types_pb2.BOOL}
)
JOIN_KEY_TYPES = frozenset({types_pb2.INT64, types_pb2.STRING})
# Types whose rules may list categories: a float category would be compared for exact equality.
CATEGORICAL_TYPES = frozenset({types_pb2.INT32, types_pb2.INT64, types_pb2.BOOL})
AGGREGATION_FUNCTIONS = ("count", "sum", "mean", "min", "max", "last")
SOURCE_KINDS = ("batch", "stream", "request")
# The longest TTL (about 146,000 years), set by the point-in-time join's int64 microseconds
# (kernels/asof_join.py): a longer one overflowed there and made every row of the view null. A view whose
# values never go stale has ttl_seconds 0.
MAX_TTL_SECONDS = MAX_TTL_US // 1_000_000
FLOAT_TYPES = frozenset({types_pb2.FLOAT32, types_pb2.FLOAT64})
INTEGER_TYPES = frozenset({types_pb2.INT32, types_pb2.INT64})
# What an aggregation's output may be. The window kernel computes in float64 and the result is cast to
# the feature's type: a mean into an integer was truncated, a bool cannot hold a count or a sum, and a
# sum / min / max / last into an integer is exact only over integral values (validation then requires
# the event field to be integral, and the materializer quarantines an event whose window result no
# longer fits: see control_plane/ingestion/streaming/plan.py).
OUTPUT_TYPES: dict[str, frozenset[int]] = {
    "count": FLOAT_TYPES | INTEGER_TYPES,
    "mean": FLOAT_TYPES,
    **{function: FLOAT_TYPES | INTEGER_TYPES for function in ("sum", "min", "max", "last")},
}


def check_name(value: str, path: str, what: str) -> None:
    if not NAME_PATTERN.fullmatch(value):
        raise InvalidArgument(f"{path}: invalid {what} name {value!r}: must match {NAME_PATTERN.pattern}")
    if len(value) > NAME_LENGTH:
        raise InvalidArgument(f"{path}: {what} name longer than {NAME_LENGTH} characters")


def validate_entity(entity: pb.Entity, path: str = "entity") -> None:
    check_name(entity.name, f"{path}.name", "entity")
    pages.check_item(entity, f"{path} {entity.name!r}")
    if not entity.join_keys:
        raise InvalidArgument(f"{path}.join_keys: an entity needs at least one join key")
    seen: set[str] = set()
    for index, key in enumerate(entity.join_keys):
        key_path = f"{path}.join_keys[{index}]"
        check_name(key.name, f"{key_path}.name", "join key")
        if key.name in seen:
            raise InvalidArgument(f"{key_path}.name: duplicate join key {key.name!r}")
        seen.add(key.name)
        if key.value_type not in JOIN_KEY_TYPES:
            raise InvalidArgument(
                f"{key_path}.value_type: unsupported type {type_name(key.value_type)} for a join key;"
                " expected int64 or string"
            )


def validate_spec(spec: pb.FeatureViewSpec, path: str = "spec") -> None:
    """Everything that can be checked without the database (the entity's existence is checked by the
    registry, which reports it at ``{path}.entity``)."""
    check_name(spec.name, f"{path}.name", "feature view")
    check_name(spec.entity, f"{path}.entity", "entity")
    if not spec.features:
        raise InvalidArgument(f"{path}.features: a feature view needs at least one feature")
    names: set[str] = set()
    for index, feature in enumerate(spec.features):
        feature_path = f"{path}.features[{index}]"
        check_name(feature.name, f"{feature_path}.name", "feature")
        if feature.name in names:
            raise InvalidArgument(f"{feature_path}.name: duplicate feature {feature.name!r}")
        names.add(feature.name)
        reserved = _reserved_column(spec, feature.name)
        if reserved is not None:
            raise InvalidArgument(
                f"{feature_path}.name: feature {feature.name!r} is named like {reserved}, a column of its own"
                " in every record and stored row; rename the feature"
            )
        if feature.value_type not in FEATURE_TYPES:
            raise InvalidArgument(
                f"{feature_path}.value_type: unsupported type {type_name(feature.value_type)} for a feature;"
                " expected float32, float64, int32, int64 or bool"
            )
        validate_rule(feature.validation, feature.value_type, f"{feature_path}.validation")
    if spec.ttl_seconds < 0:
        raise InvalidArgument(f"{path}.ttl_seconds: must be >= 0, got {spec.ttl_seconds}")
    if spec.ttl_seconds > MAX_TTL_SECONDS:
        raise InvalidArgument(
            f"{path}.ttl_seconds: feature view {spec.name!r}: a TTL of {spec.ttl_seconds} s is longer than"
            f" the maximum, {MAX_TTL_SECONDS} s (about 146,000 years); use 0 for values that never go stale"
        )
    if spec.source.kind and spec.source.kind not in SOURCE_KINDS:
        raise InvalidArgument(
            f"{path}.source.kind: unknown source kind {spec.source.kind!r};"
            f" expected one of {', '.join(SOURCE_KINDS)}"
        )
    # A view's spec is kept and handed out (the registry's rows, `features get` to a read-only token, the
    # audit log, every data plane's registry snapshot on disk): a secret in its source URI went with it.
    if holds_credentials(spec.source.uri):
        raise InvalidArgument(
            f"{path}.source.uri: holds credentials, which the registry would store and show; write"
            f" {redact_uri(spec.source.uri)!r} and give the credentials through the environment"
            " (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for S3, as pyarrow reads them)"
        )
    _validate_aggregations(spec, names, path)


def _reserved_column(spec: pb.FeatureViewSpec, name: str) -> str | None:
    """What ``name`` is besides a feature, when it names a column a view's rows already have (the
    ingestion time is the offline store's, the event time the view's), else None."""
    if name == (spec.source.timestamp_field or EVENT_TS):
        return "the view's timestamp field"
    if name in (EVENT_TS, INGESTED_TS):
        return f"the stored {'event' if name == EVENT_TS else 'ingestion'} time"
    return None


def output_type_problem(spec: pb.FeatureViewSpec, aggregation: pb.Aggregation) -> str | None:
    """Why ``aggregation``'s output feature cannot hold its result (None when it can)."""
    value_type = next((f.value_type for f in spec.features if f.name == aggregation.output), None)
    allowed = OUTPUT_TYPES.get(aggregation.function)
    if value_type is None or allowed is None or value_type in allowed:
        return None
    wanted = " or ".join(sorted(type_name(t) for t in allowed))
    return (
        f"feature {aggregation.output!r} is {type_name(value_type)}, which cannot hold a"
        f" {aggregation.function} of {aggregation.column!r}; declare it {wanted}"
    )


def _validate_aggregations(spec: pb.FeatureViewSpec, features: set[str], path: str) -> None:
    outputs: set[str] = set()
    for index, aggregation in enumerate(spec.aggregations):
        agg_path = f"{path}.aggregations[{index}]"
        if not aggregation.column:
            raise InvalidArgument(f"{agg_path}.column: the aggregated event field is required")
        if aggregation.function not in AGGREGATION_FUNCTIONS:
            raise InvalidArgument(
                f"{agg_path}.function: unknown function {aggregation.function!r};"
                f" expected one of {', '.join(AGGREGATION_FUNCTIONS)}"
            )
        if aggregation.window_seconds <= 0:
            raise InvalidArgument(f"{agg_path}.window_seconds: must be > 0, got {aggregation.window_seconds}")
        if aggregation.window_seconds > MAX_DURATION_S:
            # The materializer keeps windows in int64 microseconds: a longer one was registered, and
            # every event its stream applied then failed (an OverflowError in the window kernel).
            raise InvalidArgument(
                f"{agg_path}.window_seconds: at most {MAX_DURATION_S} s (about 292,000 years, the most"
                f" int64 microseconds hold), got {aggregation.window_seconds}"
            )
        if aggregation.output not in features:
            raise InvalidArgument(
                f"{agg_path}.output: {aggregation.output!r} is not a feature of view {spec.name!r}"
            )
        if aggregation.output in outputs:
            raise InvalidArgument(f"{agg_path}.output: feature {aggregation.output!r} is produced twice")
        outputs.add(aggregation.output)
        problem = output_type_problem(spec, aggregation)
        if problem is not None:
            raise InvalidArgument(f"{agg_path}.output: {problem}")
        index = next(i for i, f in enumerate(spec.features) if f.name == aggregation.output)
        check_aggregated_rule(
            aggregation, spec.features[index].validation, f"{path}.features[{index}].validation"
        )


def check_aggregated_rule(aggregation: pb.Aggregation, rule: pb.ValidationRule, path: str) -> None:
    """Refuses a rule on ``aggregation``'s output that its events cannot keep (aggregated_rules.py):
    ingestion could not enforce it, and the retraining check would then block on the aggregates built."""
    problem = rule_problem(aggregation, rule)
    if problem is not None:
        raise InvalidArgument(
            f"{path}: feature {aggregation.output!r} is the {describe(aggregation)}: {problem};"
            " ingestion checks each event, so it could not enforce this rule"
        )


def validate_with_entity(spec: pb.FeatureViewSpec, join_keys: Iterable[str], path: str = "spec") -> None:
    """The checks of a view that need its entity's join keys.

    A feature named like a join key: a record then has one column for both, and the stored rows two of
    that name, so every ingest of the view failed INTERNAL, after writing its accepted rows offline
    uncounted. An aggregation of a join key or of the timestamp field: a count counts the events (every
    event has both), anything else is refused. A sum of keys or a max of timestamps was registered and
    then broke every materializer step, the field being declared twice in the events' schema. A
    timestamp field named like a join key: the record's key and its event time cannot be one column."""
    timestamp = spec.source.timestamp_field or EVENT_TS
    keys = set(join_keys)
    if timestamp in keys:
        # One column cannot be both: with an int64 key every record was quarantined as having no
        # time-zone-aware timestamp, so the view could never take a value.
        default = "" if spec.source.timestamp_field else " (the default)"
        raise InvalidArgument(
            f"{path}.source.timestamp_field: {timestamp!r}{default} is a join key of entity"
            f" {spec.entity!r}; the event time needs a field of its own"
        )
    for index, feature in enumerate(spec.features):
        if feature.name in keys:
            raise InvalidArgument(
                f"{path}.features[{index}].name: feature {feature.name!r} is named like a join key of entity"
                f" {spec.entity!r}, a column of its own in every record and stored row; rename the feature"
            )
    for index, aggregation in enumerate(spec.aggregations):
        if aggregation.function == "count" or aggregation.column not in keys | {timestamp}:
            continue
        what = (
            f"the join key of entity {spec.entity!r}"
            if aggregation.column in keys
            else "the view's timestamp field"
        )
        raise InvalidArgument(
            f"{path}.aggregations[{index}].column: {aggregation.column!r} is {what}; only count may"
            f" aggregate it (it counts the events), not {aggregation.function}"
        )


def validate_rule(rule: pb.ValidationRule, value_type: int, path: str) -> None:
    has_min, has_max = rule.HasField("min_value"), rule.HasField("max_value")
    for field, present in (("min_value", has_min), ("max_value", has_max)):
        if present and math.isnan(getattr(rule, field)):
            raise InvalidArgument(f"{path}.{field}: must be a number, got NaN")
    if has_min and has_max and rule.min_value > rule.max_value:
        raise InvalidArgument(
            f"{path}: min_value {rule.min_value} is greater than max_value {rule.max_value}"
        )
    if not 0.0 <= rule.max_null_fraction <= 1.0:  # also refuses NaN
        raise InvalidArgument(
            f"{path}.max_null_fraction: must be between 0 and 1, got {rule.max_null_fraction}"
        )
    if rule.allowed_values:
        if value_type not in CATEGORICAL_TYPES:
            raise InvalidArgument(
                f"{path}.allowed_values: categories are for integer and bool features,"
                f" not {type_name(value_type)}"
            )
        if value_type == types_pb2.BOOL and not set(rule.allowed_values) <= {0, 1}:
            raise InvalidArgument(f"{path}.allowed_values: a bool feature allows only 0 and 1")


def validate_metadata(metadata: pb.FeatureViewMetadata, path: str = "metadata") -> None:
    for key in metadata.tags:
        if not key:
            raise InvalidArgument(f"{path}.tags: tag names must not be empty")
    if len(metadata.owner) > 256:
        raise InvalidArgument(f"{path}.owner: longer than 256 characters")
