"""Feature references resolved against the feature registry into one plan per view version: which
stored columns to read, the result columns they become, the entity's join keys and the view's TTL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2
from clients.errors import InvalidArgument, NotFound
from clients.value_types import numpy_dtype_name, type_name
from control_plane.offline.refs import FeatureRef, parse_ref
from kernels.asof_join import MAX_TTL_US


class ViewCatalog(Protocol):
    """What the join needs from the feature registry (``control_plane.features.registry.FeatureRegistry``
    is one): a view version (0 = latest not retired) and an entity, NotFound when unknown."""

    def get_feature_view(self, name: str, version: int = 0) -> pb.FeatureView: ...

    def get_entity(self, name: str) -> pb.Entity: ...


@dataclass(frozen=True)
class OutputColumn:
    name: str  # column of the training set: the reference with its feature spelled out
    feature: str  # column in the offline store
    dtype: pa.DataType


@dataclass(frozen=True)
class JoinKeySpec:
    name: str
    dtype: pa.DataType


@dataclass
class ViewPlan:
    view: str
    version: int
    entity: str
    join_keys: tuple[JoinKeySpec, ...]
    ttl_us: int
    columns: list[OutputColumn] = field(default_factory=list)


def plan_views(catalog: ViewCatalog, refs: Sequence[str]) -> list[ViewPlan]:
    """One plan per distinct view version, in order of first reference; each plan's result columns in
    reference order (a whole-view reference expands to every feature in registered order; repeats are
    dropped). The training set's columns follow the plans, so they are grouped by view version.
    INVALID_ARGUMENT for a malformed reference or none at all; NOT_FOUND for an unknown view, version or
    feature (raised by the catalog for the first two)."""
    if not refs:
        raise InvalidArgument("no feature references given")
    parsed = [parse_ref(text) for text in refs]
    views: dict[tuple[str, int], tuple[pb.FeatureView, ViewPlan]] = {}
    latest: dict[str, int] = {}
    entities: dict[str, pb.Entity] = {}
    seen: set[str] = set()
    for ref in parsed:
        version = ref.version if ref.version is not None else latest.get(ref.view, 0)
        found = views.get((ref.view, version))
        if found is None:
            message = catalog.get_feature_view(ref.view, version)
            version = message.version
            if ref.version is None:
                latest[ref.view] = version
            found = views.get((ref.view, version))
            if found is None:
                entity = entities.get(message.spec.entity) or catalog.get_entity(message.spec.entity)
                entities[message.spec.entity] = entity
                found = (message, _new_plan(message, entity))
                views[(ref.view, version)] = found
        message, plan = found
        for feature in _features_of(message, ref):
            name = str(FeatureRef(ref.view, ref.version, feature.name))
            if name not in seen:
                seen.add(name)
                plan.columns.append(OutputColumn(name, feature.name, _arrow_type(feature.value_type)))
    return [plan for _, plan in views.values() if plan.columns]


def _new_plan(view: pb.FeatureView, entity: pb.Entity) -> ViewPlan:
    keys = tuple(
        JoinKeySpec(key.name, pa.string() if key.value_type == types_pb2.STRING else pa.int64())
        for key in entity.join_keys
    )
    ttl_us = view.spec.ttl_seconds * 1_000_000
    if ttl_us > MAX_TTL_US:
        # Registered before the registry refused such a TTL (features/validation.py): longer than any
        # span of time the join can see, so it is no TTL, which is what the kernel is told instead of a
        # value that would overflow it and null every row.
        ttl_us = 0
    return ViewPlan(view.spec.name, view.version, entity.name, keys, ttl_us)


def _features_of(view: pb.FeatureView, ref: FeatureRef) -> list[pb.Feature]:
    if ref.feature is None:
        return list(view.spec.features)
    for feature in view.spec.features:
        if feature.name == ref.feature:
            return [feature]
    raise NotFound(f"feature view {view.spec.name!r} version {view.version} has no feature {ref.feature!r}")


def _arrow_type(value_type: int) -> pa.DataType:
    try:
        return pa.from_numpy_dtype(numpy_dtype_name(value_type))
    except ValueError:
        raise InvalidArgument(f"features of type {type_name(value_type)} cannot be joined") from None
