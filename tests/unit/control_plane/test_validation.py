"""Definitions the registry refuses, each with the path of the offending field."""

from __future__ import annotations

import pytest

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2
from clients.errors import AlreadyExists, InvalidArgument
from control_plane.features.registry import FeatureRegistry
from control_plane.features.validation import MAX_TTL_SECONDS
from tests.unit.control_plane.builders import entity, metadata, spec


def with_rule(
    rule: pb.ValidationRule, value_type: types_pb2.ValueType = types_pb2.INT64
) -> pb.FeatureViewSpec:
    bad = spec()
    bad.features[0].value_type = value_type
    bad.features[0].validation.CopyFrom(rule)
    return bad


def aggregating(**fields: object) -> pb.FeatureViewSpec:
    values: dict[str, object] = {"column": "fare", "function": "sum", "window_seconds": 60, "output": "trips"}
    values.update(fields)
    return spec(aggregations=[pb.Aggregation(**values)])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (spec(name="DriverStats"), r"spec\.name: invalid feature view name 'DriverStats'"),
        (spec(name="x" * 129), r"spec\.name: feature view name longer than 128"),
        (spec(features=[]), r"spec\.features: a feature view needs at least one feature"),
        (
            spec(features=[("a", types_pb2.INT64), ("a", types_pb2.FLOAT32)]),
            r"spec\.features\[1\]\.name: duplicate",
        ),
        (
            spec(features=[("a", types_pb2.STRING)]),
            r"spec\.features\[0\]\.value_type: unsupported type string",
        ),
        (
            spec(features=[("a", types_pb2.VALUE_TYPE_UNSPECIFIED)]),
            r"spec\.features\[0\]\.value_type: unsupported type unknown\(0\)",
        ),
        (spec(features=[("1a", types_pb2.INT64)]), r"spec\.features\[0\]\.name: invalid feature name '1a'"),
        (spec(ttl_seconds=-1), r"spec\.ttl_seconds: must be >= 0, got -1"),
        (
            spec(ttl_seconds=MAX_TTL_SECONDS + 1),
            r"spec\.ttl_seconds: feature view 'driver_stats': a TTL of 4611686018428 s is longer than the"
            r" maximum, 4611686018427 s",
        ),
        (spec(entity="drivr"), r"spec\.entity: entity 'drivr' not found"),
        (spec(source=pb.Source(kind="kafka")), r"spec\.source\.kind: unknown source kind 'kafka'"),
        (aggregating(function="avg"), r"spec\.aggregations\[0\]\.function: unknown function 'avg'"),
        (aggregating(window_seconds=0), r"spec\.aggregations\[0\]\.window_seconds: must be > 0"),
        (aggregating(output="tips"), r"spec\.aggregations\[0\]\.output: 'tips' is not a feature"),
        (aggregating(column=""), r"spec\.aggregations\[0\]\.column: the aggregated event field is required"),
        (
            aggregating(function="mean"),  # trips is int64: the mean of 1 and 2 was stored as 1
            r"spec\.aggregations\[0\]\.output: feature 'trips' is int64, which cannot hold a mean of 'fare';"
            r" declare it float32 or float64",
        ),
        (
            spec(
                features=[("trips", types_pb2.BOOL)],
                aggregations=[
                    pb.Aggregation(column="fare", function="count", window_seconds=60, output="trips")
                ],
            ),
            r"spec\.aggregations\[0\]\.output: feature 'trips' is bool, which cannot hold a count of 'fare';"
            r" declare it float32 or float64 or int32 or int64",
        ),
        (
            aggregating(column="driver_id"),  # registered, then every materializer step raised KeyError
            r"spec\.aggregations\[0\]\.column: 'driver_id' is the join key of entity 'driver'; only count may"
            r" aggregate it \(it counts the events\), not sum",
        ),
        (
            aggregating(column="event_ts", function="max", output="rating"),
            r"spec\.aggregations\[0\]\.column: 'event_ts' is the view's timestamp field; only count may",
        ),
        # A feature named like a column every row has: registered, then every ingest of the view failed
        # INTERNAL after writing its accepted rows offline, counted by no run.
        (
            spec(features=[("trips", types_pb2.INT64), ("driver_id", types_pb2.FLOAT64)]),
            r"spec\.features\[1\]\.name: feature 'driver_id' is named like a join key of entity 'driver'",
        ),
        (
            spec(features=[("event_ts", types_pb2.INT64)]),
            r"spec\.features\[0\]\.name: feature 'event_ts' is named like the view's timestamp field",
        ),
        (
            spec(features=[("ingested_ts", types_pb2.INT64)]),
            r"spec\.features\[0\]\.name: feature 'ingested_ts' is named like the stored ingestion time",
        ),
        (
            spec(features=[("seen_at", types_pb2.INT64)], source=pb.Source(timestamp_field="seen_at")),
            r"spec\.features\[0\]\.name: feature 'seen_at' is named like the view's timestamp field",
        ),
        (
            spec(features=[("event_ts", types_pb2.INT64)], source=pb.Source(timestamp_field="seen_at")),
            r"spec\.features\[0\]\.name: feature 'event_ts' is named like the stored event time",
        ),
        # Stored, shown to read-only tokens, audited and written to every data plane's snapshot.
        (
            spec(source=pb.Source(kind="batch", uri="s3://AKIAKEY:SeCrEt@bucket/weather.parquet")),
            r"spec\.source\.uri: holds credentials, which the registry would store and show; write"
            r" 's3://bucket/weather\.parquet' and give the credentials through the environment",
        ),
        (
            spec(source=pb.Source(kind="batch", uri="abfs://c@acct.dfs.core.windows.net/x?sas_token=s")),
            r"spec\.source\.uri: holds credentials",
        ),
        (
            with_rule(pb.ValidationRule(min_value=2, max_value=1)),
            r"spec\.features\[0\]\.validation: min_value 2\.0 is greater than max_value 1\.0",
        ),
        (
            with_rule(pb.ValidationRule(max_null_fraction=1.5)),
            r"spec\.features\[0\]\.validation\.max_null_fraction: must be between 0 and 1",
        ),
        (
            with_rule(pb.ValidationRule(allowed_values=[1, 2]), types_pb2.FLOAT32),
            r"spec\.features\[0\]\.validation\.allowed_values: categories are for integer and bool",
        ),
        (
            with_rule(pb.ValidationRule(allowed_values=[2]), types_pb2.BOOL),
            r"spec\.features\[0\]\.validation\.allowed_values: a bool feature allows only 0 and 1",
        ),
    ],
)
def test_invalid_view_is_refused_with_the_field_path(
    registry: FeatureRegistry, bad: pb.FeatureViewSpec, message: str
) -> None:
    registry.create_entity(entity())
    with pytest.raises(InvalidArgument, match=f"^{message}"):
        registry.create_feature_view(bad, metadata())
    assert registry.list_feature_views() == []


def test_valid_rules_and_aggregations_are_accepted(registry: FeatureRegistry) -> None:
    registry.create_entity(entity())
    good = with_rule(
        pb.ValidationRule(min_value=0, max_value=0, allowed_values=[0, 1], max_null_fraction=1.0)
    )
    good.aggregations.append(
        pb.Aggregation(column="fare", function="last", window_seconds=1, output="rating")
    )
    assert registry.create_feature_view(good, metadata()).spec == good


@pytest.mark.parametrize(
    "uri",
    [
        "s3://bucket/w.parquet?region=eu-west-1&",
        "s3://bucket/w.parquet?",
        "abfs://container@acct.dfs.core.windows.net/w",
        "gs://bucket/w.parquet?credential_token_expiration=3600",
        "s3://bucket/w.parquet?partition_key=day&region=eu-west-1",
    ],
)
def test_a_source_uri_without_credentials_is_kept_as_written(registry: FeatureRegistry, uri: str) -> None:
    """A URI that redacting only tidies (an empty query, a stray '&', abfs's container name) was refused
    as holding credentials, and so was one with a parameter whose name merely contains a credential's
    word (GCS's ``credential_token_expiration``, a ``partition_key``)."""
    registry.create_entity(entity())
    view = spec(source=pb.Source(kind="batch", uri=uri))
    assert registry.create_feature_view(view, metadata()).spec.source.uri == uri


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (entity(keys=()), r"entity\.join_keys: an entity needs at least one join key"),
        (
            entity(keys=(("id", types_pb2.FLOAT32),)),
            r"entity\.join_keys\[0\]\.value_type: unsupported type float32",
        ),
        (
            entity(keys=(("id", types_pb2.INT64), ("id", types_pb2.STRING))),
            r"entity\.join_keys\[1\]\.name: duplicate join key 'id'",
        ),
        (entity(name="driver-1"), r"entity\.name: invalid entity name 'driver-1'"),
    ],
)
def test_invalid_entity_is_refused_with_the_field_path(
    registry: FeatureRegistry, bad: pb.Entity, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=f"^{message}"):
        registry.create_entity(bad)
    assert registry.list_entities() == []


def test_names_are_unique(registry: FeatureRegistry) -> None:
    registry.create_entity(entity(keys=(("driver_id", types_pb2.STRING),)))
    with pytest.raises(AlreadyExists, match="entity 'driver' already exists"):
        registry.create_entity(entity())
    registry.create_feature_view(spec(), metadata())
    with pytest.raises(AlreadyExists, match="feature view 'driver_stats' already exists"):
        registry.create_feature_view(spec(ttl_seconds=1), metadata())
    assert registry.get_entity("driver").join_keys[0].value_type == types_pb2.STRING
    assert registry.get_feature_view("driver_stats").spec.ttl_seconds == 3600


def test_a_feature_named_like_a_join_key_is_refused_by_a_new_version_and_by_apply(
    registry: FeatureRegistry,
) -> None:
    registry.create_entity(entity())
    registry.create_feature_view(spec(), metadata())
    clashing = spec(features=[("trips", types_pb2.INT64), ("driver_id", types_pb2.INT64)])
    with pytest.raises(InvalidArgument, match=r"^spec\.features\[1\]\.name: feature 'driver_id' is named"):
        registry.create_feature_view_version(clashing)
    request = pb.ApplyRequest(views=[pb.FeatureView(spec=clashing, metadata=metadata())])
    with pytest.raises(InvalidArgument, match=r"^views\[0\]\.spec\.features\[1\]\.name: feature 'driver_id'"):
        registry.apply(request)
    assert [v.version for v in registry.list_feature_view_versions("driver_stats")] == [1]


def test_a_rule_on_an_aggregate_its_events_cannot_keep_is_refused_everywhere_a_rule_is_set(
    registry: FeatureRegistry,
) -> None:
    """Ingestion enforces a rule on an aggregate on each event (control_plane/features/aggregated_rules.py);
    a rule no single event can keep (a max on a count) is refused by create, a new version, apply and an
    in-place edit of the rules, naming the feature, the aggregation and why."""
    registry.create_entity(entity())
    counted = aggregating(function="count")
    counted.features[0].validation.max_value = 100
    why = (
        r"spec\.features\[0\]\.validation: feature 'trips' is the count of 'fare' over 1m: a max_value on a"
        r" count depends on how many events arrive"
    )
    with pytest.raises(InvalidArgument, match=f"^{why}"):
        registry.create_feature_view(counted, metadata())
    kept = aggregating(function="count")
    kept.features[0].validation.min_value = 0  # always kept: a window holds at least one event
    registry.create_feature_view(kept, metadata())
    changed = aggregating(function="count", window_seconds=120)
    changed.features[0].validation.max_value = 100
    with pytest.raises(
        InvalidArgument, match=r"^spec\.features\[0\]\.validation: feature 'trips' is the count"
    ):
        registry.create_feature_view_version(changed)
    request = pb.ApplyRequest(views=[pb.FeatureView(spec=counted, metadata=metadata())])
    with pytest.raises(
        InvalidArgument, match=r"^views\[0\]\.spec\.features\[0\]\.validation: feature 'trips'"
    ):
        registry.apply(request)
    with pytest.raises(InvalidArgument, match=r"^rules\[trips\]: feature 'trips' is the count of 'fare'"):
        registry.update_validation("driver_stats", 0, {"trips": pb.ValidationRule(max_value=100)})
    stored = registry.get_feature_view("driver_stats")
    assert stored.version == 1 and not stored.spec.features[0].validation.HasField("max_value")
    edited = registry.update_validation("driver_stats", 0, {"trips": pb.ValidationRule(min_value=0)})
    assert edited.spec.features[0].validation.HasField("min_value")
