"""Builders of registry snapshots for data-plane tests: the messages the control plane streams, with
fingerprints computed as the registry computes them (``kernels.fingerprint``)."""

from __future__ import annotations

from collections.abc import Sequence

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2
from clients.value_types import numpy_dtype_name, value_type
from control_plane.features.online_writer import OnlineViewVersion
from kernels.fingerprint import schema_fingerprint


def entity(name: str = "driver", keys: Sequence[tuple[str, str]] = (("driver_id", "int64"),)) -> pb.Entity:
    join_keys = [pb.JoinKey(name=k, value_type=value_type(t)) for k, t in keys]  # type: ignore[arg-type]
    return pb.Entity(name=name, join_keys=join_keys)


def view(
    name: str,
    features: Sequence[tuple[str, str]],
    *,
    version: int = 1,
    entity: str = "driver",
    ttl_seconds: int = 0,
    status: int = types_pb2.ACTIVE,
) -> pb.FeatureView:
    return pb.FeatureView(
        spec=pb.FeatureViewSpec(
            name=name,
            entity=entity,
            features=[pb.Feature(name=f, value_type=value_type(t)) for f, t in features],  # type: ignore[arg-type]
            ttl_seconds=ttl_seconds,
        ),
        version=version,
        status=status,  # type: ignore[arg-type]
        schema_fingerprint=schema_fingerprint(name, version, list(features)),
        latest_version=version,
    )


def floats(count: int, prefix: str = "f") -> list[tuple[str, str]]:
    return [(f"{prefix}{i}", "float32") for i in range(count)]


def snapshot(
    *views: pb.FeatureView, entities: Sequence[pb.Entity] | None = None, revision: int = 1
) -> pb.RegistrySnapshot:
    return pb.RegistrySnapshot(
        revision=revision, entities=list(entities) if entities is not None else [entity()], views=list(views)
    )


def writable(fv: pb.FeatureView) -> OnlineViewVersion:
    """The writer's description of a registered view version."""
    return OnlineViewVersion(
        name=fv.spec.name,
        version=fv.version,
        entity=fv.spec.entity,
        columns=tuple((f.name, numpy_dtype_name(f.value_type)) for f in fv.spec.features),
        fingerprint=fv.schema_fingerprint,
        ttl_seconds=fv.spec.ttl_seconds,
    )
