"""The data plane's view of the feature registry: an immutable catalog built from one
``RegistrySnapshot``, and the holder that the registry watch swaps new catalogs into.

Everything a read needs per view version (layout dtype, fingerprint, TTL, column positions) is computed
once here, and compiled read plans are cached per distinct tuple of references (services send the same
references over and over, so parsing and resolving must not be paid per request) and, for requests off
the wire, per distinct serialized run of references (:meth:`Catalog.plan_for_wire`), so that not even
the references' Python strings are built.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from google.protobuf.message import DecodeError

from clients.aether.v1 import feature_registry_pb2, online_features_pb2, types_pb2
from clients.errors import InvalidArgument, NotFound, Unavailable
from clients.value_types import numpy_dtype_name, type_name
from data_plane.blob_shape import blob_shape
from data_plane.plan import CONTROL_PLANES_LIMIT, JoinKeyLimit, ReadPlan, compile_plan
from data_plane.plan_cache import MAX_WEIGHT, PlanCache, plan_weight
from data_plane.schema import EntitySpec, ViewVersion
from kernels.packed_blob import layout_dtype

_log = logging.getLogger("aether.data_plane.catalog")

SERVABLE_STATUSES = (types_pb2.ACTIVE, types_pb2.DEPRECATED)


def _view_version(view: feature_registry_pb2.FeatureView) -> ViewVersion:
    spec = view.spec
    columns = tuple(f.name for f in spec.features)
    value_types = tuple(int(f.value_type) for f in spec.features)
    dtype_names = tuple(numpy_dtype_name(t) for t in value_types)
    layout = layout_dtype(dtype_names)
    fingerprint = int(view.schema_fingerprint)
    return ViewVersion(
        name=spec.name,
        version=int(view.version),
        entity=spec.entity,
        columns=columns,
        value_types=value_types,
        dtype_names=dtype_names,
        layout=layout,
        fingerprint=fingerprint,
        ttl_seconds=int(spec.ttl_seconds),
        status=int(view.status),
        column_index={name: i for i, name in enumerate(columns)},
        blob=blob_shape(layout, len(columns), fingerprint),
    )


def _entity(entity: feature_registry_pb2.Entity) -> EntitySpec:
    for key in entity.join_keys:
        if key.value_type not in (types_pb2.INT64, types_pb2.STRING):
            raise ValueError(
                f"join key {key.name!r} has type {type_name(key.value_type)}; expected int64 or string"
            )
    return EntitySpec(
        name=entity.name,
        join_keys=tuple(k.name for k in entity.join_keys),
        integer_keys=tuple(k.value_type == types_pb2.INT64 for k in entity.join_keys),
    )


class Catalog:
    """Immutable: a new snapshot builds a new catalog (with a fresh plan cache) that replaces this one."""

    def __init__(
        self,
        snapshot: feature_registry_pb2.RegistrySnapshot,
        *,
        plan_cache_size: int = 1024,
        plan_cache_weight: int = MAX_WEIGHT,
    ) -> None:
        """``plan_cache_size`` plans of each kind of key, holding ``plan_cache_weight`` references and
        columns in all (:mod:`data_plane.plan_cache`)."""
        self.revision = int(snapshot.revision)
        self.snapshot = snapshot
        # The control plane's join-key limit (its ingestion stores no longer key): what reads refuse by.
        # None when the snapshot names none (an older control plane): the reader's own setting applies.
        limit = int(snapshot.max_join_key_bytes)
        self.join_key_limit = JoinKeyLimit(limit, CONTROL_PLANES_LIMIT) if limit else None
        entities: dict[str, EntitySpec] = {}
        for entity in snapshot.entities:
            try:
                entities[entity.name] = _entity(entity)
            except ValueError as exc:  # one bad definition must not stop every other read
                _log.error(
                    "registry revision %d: entity %r is not servable: %s", self.revision, entity.name, exc
                )
        views: dict[str, dict[int, ViewVersion]] = {}
        for view in snapshot.views:
            if view.status not in SERVABLE_STATUSES:
                continue
            try:
                parsed = _view_version(view)
            except ValueError as exc:
                _log.error(
                    "registry revision %d: view %s@%d is not servable: %s",
                    self.revision, view.spec.name, view.version, exc,
                )  # fmt: skip
                continue
            views.setdefault(parsed.name, {})[parsed.version] = parsed
        self.entities: Mapping[str, EntitySpec] = entities
        self.views: Mapping[str, Mapping[int, ViewVersion]] = views
        # Unpinned references read the highest servable version (as GetFeatureView with version 0 does).
        self.latest: Mapping[str, int] = {name: max(versions) for name, versions in views.items()}
        # Plans by references and by serialized references (two callers' keys: twice the plans of one).
        self._plans = PlanCache(2 * plan_cache_size, plan_cache_weight)

    def view_version(self, name: str, version: int | None = None) -> ViewVersion:
        versions = self.views.get(name)
        if versions is None:
            raise NotFound(f"feature view {name!r} is not registered (or has no servable version)")
        if version is None:
            version = self.latest[name]
        found = versions.get(version)
        if found is None:
            servable = ", ".join(str(v) for v in sorted(versions))
            raise NotFound(f"feature view {name!r} has no servable version {version} (servable: {servable})")
        return found

    def entity(self, name: str, *, for_view: str) -> EntitySpec:
        found = self.entities.get(name)
        if found is None:
            raise NotFound(f"entity {name!r} of feature view {for_view!r} is not registered")
        return found

    def plan(self, refs: Sequence[str]) -> ReadPlan:
        """The compiled plan for ``refs`` (cached; errors are not cached and raise every time)."""
        key = tuple(refs)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._compile(key)
            self._plans.put(key, plan, plan_weight(len(key), plan))
        return plan

    def plan_for_wire(self, features_wire: bytes) -> ReadPlan:
        """The plan for the references serialized in ``features_wire``: the run of ``features`` entries
        (field 1) of a ``GetOnlineFeaturesRequest``, as found by :func:`kernels.wire_scan.leading_run`.
        Cached by those bytes; the same plan as :meth:`plan` of the parsed references."""
        plan = self._plans.get(features_wire)
        if plan is None:
            # The split only found where the references end; this is where their bytes are parsed (a
            # reference that is not UTF-8 fails here, as it would in a whole-message parse).
            try:
                refs = tuple(online_features_pb2.GetOnlineFeaturesRequest.FromString(features_wire).features)
            except DecodeError as exc:
                raise InvalidArgument(f"malformed GetOnlineFeaturesRequest: {exc}") from None
            plan = self.plan(refs)  # one plan for both keys, each weighed in full
            self._plans.put(features_wire, plan, plan_weight(len(refs), plan))
        return plan

    def _compile(self, refs: tuple[str, ...]) -> ReadPlan:
        if not refs:
            raise InvalidArgument("no features requested")
        return compile_plan(self, refs)


class RegistryState:
    """Holds the catalog of the newest snapshot; the registry watch replaces it, reads take it."""

    def __init__(self) -> None:
        self.catalog: Catalog | None = None

    def require(self) -> Catalog:
        catalog = self.catalog
        if catalog is None:
            raise Unavailable("no feature registry snapshot yet")
        return catalog
