"""Small builders of registry messages, so each test states only what it varies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2

DEFAULT_FEATURES: tuple[tuple[str, types_pb2.ValueType], ...] = (
    ("trips", types_pb2.INT64),
    ("rating", types_pb2.FLOAT32),
)
DEFAULT_SOURCE = pb.Source(kind="batch", uri="data/driver_stats.parquet", timestamp_field="event_ts")


def entity(
    name: str = "driver",
    keys: Sequence[tuple[str, types_pb2.ValueType]] = (("driver_id", types_pb2.INT64),),
    description: str = "",
) -> pb.Entity:
    return pb.Entity(
        name=name,
        join_keys=[pb.JoinKey(name=key, value_type=value_type) for key, value_type in keys],
        description=description,
    )


def spec(
    name: str = "driver_stats",
    entity: str = "driver",
    features: Sequence[tuple[str, types_pb2.ValueType]] = DEFAULT_FEATURES,
    ttl_seconds: int = 3600,
    source: pb.Source = DEFAULT_SOURCE,
    aggregations: Sequence[pb.Aggregation] = (),
    descriptions: Mapping[str, str] | None = None,
) -> pb.FeatureViewSpec:
    described = descriptions or {}
    return pb.FeatureViewSpec(
        name=name,
        entity=entity,
        features=[
            pb.Feature(name=feature, value_type=value_type, description=described.get(feature, ""))
            for feature, value_type in features
        ],
        source=source,
        ttl_seconds=ttl_seconds,
        aggregations=aggregations,
    )


def metadata(
    description: str = "", owner: str = "team-a", tags: Mapping[str, str] | None = None
) -> pb.FeatureViewMetadata:
    return pb.FeatureViewMetadata(description=description, owner=owner, tags=dict(tags or {}))


def view(spec: pb.FeatureViewSpec, metadata: pb.FeatureViewMetadata | None = None) -> pb.FeatureView:
    return pb.FeatureView(spec=spec, metadata=metadata or pb.FeatureViewMetadata(owner="team-a"))
