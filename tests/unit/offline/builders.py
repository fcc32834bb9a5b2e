"""Builders of feature rows, entity rows and registered views, so each test states only what it varies."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import pyarrow as pa

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2
from control_plane.features.registry import FeatureRegistry

Values: TypeAlias = Sequence[object] | np.ndarray | pa.Array

T0 = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
TS = pa.timestamp("us", tz="UTC")


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def micros(moment: dt.datetime) -> int:
    return (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def ensure_entity(
    registry: FeatureRegistry,
    name: str = "user",
    keys: Sequence[tuple[str, types_pb2.ValueType]] = (("user_id", types_pb2.INT64),),
) -> None:
    existing = {e.name for e in registry.list_entities()}
    if name not in existing:
        registry.create_entity(
            pb.Entity(name=name, join_keys=[pb.JoinKey(name=k, value_type=t) for k, t in keys])
        )


def feature_spec(
    name: str,
    features: Sequence[tuple[str, types_pb2.ValueType]] = (("score", types_pb2.FLOAT64),),
    ttl_seconds: int = 0,
    entity: str = "user",
) -> pb.FeatureViewSpec:
    return pb.FeatureViewSpec(
        name=name,
        entity=entity,
        features=[pb.Feature(name=f, value_type=t) for f, t in features],
        source=pb.Source(kind="batch", uri="offline", timestamp_field="event_ts"),
        ttl_seconds=ttl_seconds,
    )


def create_view(registry: FeatureRegistry, spec: pb.FeatureViewSpec) -> int:
    return int(registry.create_feature_view(spec, pb.FeatureViewMetadata(owner="team-a")).version)


def feature_rows(
    keys: dict[str, Values],
    event: Sequence[dt.datetime],
    values: dict[str, Values],
    ingested: Sequence[dt.datetime] | None = None,
) -> pa.Table:
    columns: dict[str, pa.Array] = {name: _array(v) for name, v in keys.items()}
    columns["event_ts"] = pa.array(list(event), TS)
    columns["ingested_ts"] = pa.array(list(ingested if ingested is not None else event), TS)
    for name, v in values.items():
        columns[name] = _array(v)
    return pa.table(columns)


def entity_rows(keys: dict[str, Values], ts: Sequence[dt.datetime], column: str = "event_ts") -> pa.Table:
    return pa.table({**{name: _array(v) for name, v in keys.items()}, column: pa.array(list(ts), TS)})


def _array(values: Values) -> pa.Array:
    return (
        values
        if isinstance(values, pa.Array)
        else pa.array(values if isinstance(values, np.ndarray) else list(values))
    )
