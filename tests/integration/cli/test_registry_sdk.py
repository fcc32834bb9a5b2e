"""The Python registry SDK against a real control plane: one call per RPC, errors as clients.errors."""

from __future__ import annotations

import pytest

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2
from clients.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from clients.sdk.registry import FeatureRegistryClient


def spec(*features: tuple[str, types_pb2.ValueType]) -> pb.FeatureViewSpec:
    return pb.FeatureViewSpec(
        name="rider_stats",
        entity="rider",
        ttl_seconds=3600,
        source=pb.Source(kind="batch", uri="riders.parquet"),
        features=[pb.Feature(name=name, value_type=value_type) for name, value_type in features],
    )


def test_every_registry_call_round_trips(control_plane: str) -> None:
    rider = pb.Entity(name="rider", join_keys=[pb.JoinKey(name="rider_id", value_type=types_pb2.INT64)])
    with FeatureRegistryClient(control_plane, timeout=5) as client:
        assert client.create_entity(rider).name == "rider"
        with pytest.raises(AlreadyExists):
            client.create_entity(rider)
        assert [key.name for key in client.get_entity("rider").join_keys] == ["rider_id"]
        assert [entity.name for entity in client.list_entities()] == ["rider"]

        first = client.create_feature_view(
            spec(("trips", types_pb2.INT64)), pb.FeatureViewMetadata(owner="growth", tags={"team": "growth"})
        )
        assert (first.version, first.status) == (1, types_pb2.ACTIVE)
        second = client.create_feature_view_version(
            spec(("trips", types_pb2.INT64), ("rating", types_pb2.FLOAT32))
        )
        assert second.version == 2
        with pytest.raises(FailedPrecondition):  # nothing versioned changed
            client.create_feature_view_version(
                spec(("trips", types_pb2.INT64), ("rating", types_pb2.FLOAT32))
            )

        edited = client.update_feature_view_metadata(
            "rider_stats", pb.FeatureViewMetadata(owner="ops"), feature_descriptions={"trips": "Trips taken"}
        )
        assert (edited.metadata.owner, edited.version) == ("ops", 2)
        ruled = client.update_validation(
            "rider_stats", 2, {"rating": pb.ValidationRule(min_value=1, max_value=5)}
        )
        assert ruled.spec.features[1].validation.max_value == 5
        assert client.get_feature_view("rider_stats").spec.features[0].description == "Trips taken"
        assert len(client.get_feature_view("rider_stats", 1).spec.features) == 1
        assert [view.spec.name for view in client.list_feature_views(owner="ops")] == ["rider_stats"]
        assert client.list_feature_views(owner="growth") == []
        assert [v.version for v in client.list_feature_view_versions("rider_stats")] == [1, 2]

        assert client.deprecate_version("rider_stats", 1).status == types_pb2.DEPRECATED
        assert client.retire_version("rider_stats", 1).status == types_pb2.RETIRED

        plan = client.apply([rider], [], dry_run=True)
        assert [(step.name, step.action) for step in plan.steps] == [("rider", pb.NO_CHANGE)]
        assert not plan.applied

        client.delete_feature_view("rider_stats")
        with pytest.raises(NotFound, match="rider_stats"):
            client.get_feature_view("rider_stats")
        client.delete_entity("rider")
        assert client.list_entities() == []
        with pytest.raises(InvalidArgument):
            client.create_entity(pb.Entity(name="Bad Name"))
