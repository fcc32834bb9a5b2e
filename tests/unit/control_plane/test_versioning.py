"""Versions are immutable: what changes the value layout or its computation makes version N+1, metadata
and feature details are edited in place, and old versions stay readable side by side."""

from __future__ import annotations

import pytest

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2
from clients.errors import FailedPrecondition, InvalidArgument, NotFound
from control_plane.features.registry import FeatureRegistry
from kernels.fingerprint import schema_fingerprint
from tests.unit.control_plane.builders import entity, metadata, spec


@pytest.fixture
def with_view(registry: FeatureRegistry) -> FeatureRegistry:
    registry.create_entity(entity())
    registry.create_entity(entity("rider", (("rider_id", types_pb2.STRING),)))
    registry.create_feature_view(spec(), metadata(description="driver stats", tags={"tier": "gold"}))
    return registry


def test_create_makes_version_one_with_the_schema_fingerprint(with_view: FeatureRegistry) -> None:
    view = with_view.get_feature_view("driver_stats")
    assert (view.version, view.latest_version, view.status) == (1, 1, types_pb2.ACTIVE)
    assert view.schema_fingerprint == schema_fingerprint(
        "driver_stats", 1, [("trips", "int64"), ("rating", "float32")]
    )
    assert view.spec == spec()
    assert view.metadata == metadata(description="driver stats", tags={"tier": "gold"})
    assert view.created_at_us > 0


AGGREGATION = pb.Aggregation(column="fare", function="sum", window_seconds=3600, output="trips")


@pytest.mark.parametrize(
    ("changed", "why"),
    [
        (spec(features=[("trips", types_pb2.INT32), ("rating", types_pb2.FLOAT32)]), "dtype"),
        (
            spec(
                features=[
                    ("trips", types_pb2.INT64),
                    ("rating", types_pb2.FLOAT32),
                    ("tips", types_pb2.FLOAT64),
                ]
            ),
            "added",
        ),
        (spec(features=[("trips", types_pb2.INT64)]), "removed"),
        (spec(features=[("rating", types_pb2.FLOAT32), ("trips", types_pb2.INT64)]), "order"),
        (spec(source=pb.Source(kind="stream", uri="driver_events", timestamp_field="event_ts")), "source"),
        (spec(ttl_seconds=7200), "ttl"),
        (spec(aggregations=[AGGREGATION]), "aggregation"),
        (spec(entity="rider"), "entity"),
    ],
)
def test_versioned_change_makes_a_new_version_and_keeps_the_old(
    with_view: FeatureRegistry, changed: pb.FeatureViewSpec, why: str
) -> None:
    created = with_view.create_feature_view_version(changed)

    assert (created.version, created.latest_version, created.status) == (2, 2, types_pb2.ACTIVE), why
    assert created.spec == changed
    old = with_view.get_feature_view("driver_stats", 1)
    assert old.spec == spec() and old.latest_version == 2
    assert old.schema_fingerprint != created.schema_fingerprint
    assert with_view.get_feature_view("driver_stats").version == 2
    assert [v.version for v in with_view.list_feature_view_versions("driver_stats")] == [1, 2]
    assert created.metadata.description == "driver stats"  # metadata belongs to the view, not the version


def test_new_version_with_nothing_versioned_changed_is_refused(with_view: FeatureRegistry) -> None:
    only_descriptions = spec(descriptions={"trips": "completed trips today"})
    with pytest.raises(FailedPrecondition, match="nothing versioned changed"):
        with_view.create_feature_view_version(only_descriptions)
    assert with_view.get_feature_view("driver_stats").latest_version == 1


def test_new_version_of_an_unknown_view_is_not_found(with_view: FeatureRegistry) -> None:
    with pytest.raises(NotFound, match="'nope'"):
        with_view.create_feature_view_version(spec(name="nope"))


def test_metadata_edits_never_create_a_version(with_view: FeatureRegistry) -> None:
    before = with_view.revision()
    updated = with_view.update_feature_view_metadata(
        "driver_stats",
        metadata(description="new text", owner="team-b", tags={"pii": "no"}),
        {"trips": "trip count"},
    )

    assert (updated.version, updated.latest_version) == (1, 1)
    assert updated.metadata == metadata(description="new text", owner="team-b", tags={"pii": "no"})
    assert updated.spec.features[0].description == "trip count"
    assert updated.schema_fingerprint == with_view.get_feature_view("driver_stats", 1).schema_fingerprint
    assert len(with_view.list_feature_view_versions("driver_stats")) == 1
    assert with_view.revision() == before + 1
    assert with_view.get_feature_view("driver_stats").metadata.owner == "team-b"


def test_feature_descriptions_alone_keep_the_metadata(with_view: FeatureRegistry) -> None:
    updated = with_view.update_feature_view_metadata("driver_stats", None, {"rating": "average stars"})
    assert updated.metadata.description == "driver stats"
    assert updated.spec.features[1].description == "average stars"


def test_description_of_an_unknown_feature_is_not_found(with_view: FeatureRegistry) -> None:
    with pytest.raises(NotFound, match="'tips'"):
        with_view.update_feature_view_metadata("driver_stats", None, {"tips": "?"})


def test_validation_rules_are_replaced_in_place_on_any_version(with_view: FeatureRegistry) -> None:
    with_view.create_feature_view_version(spec(ttl_seconds=60))
    rule = pb.ValidationRule(min_value=0, max_value=500, max_null_fraction=0.01)

    updated = with_view.update_validation("driver_stats", 1, {"trips": rule})

    assert updated.version == 1 and updated.spec.features[0].validation == rule
    assert with_view.get_feature_view("driver_stats", 1).spec.features[0].validation == rule
    assert not with_view.get_feature_view("driver_stats", 2).spec.features[0].HasField("validation")
    assert len(with_view.list_feature_view_versions("driver_stats")) == 2


def test_invalid_validation_rule_names_the_feature(with_view: FeatureRegistry) -> None:
    with pytest.raises(
        InvalidArgument, match=r"^rules\[trips\]: min_value 5.0 is greater than max_value 1.0"
    ):
        with_view.update_validation("driver_stats", 1, {"trips": pb.ValidationRule(min_value=5, max_value=1)})
    assert not with_view.get_feature_view("driver_stats").spec.features[0].HasField("validation")


def test_list_filters_by_owner_and_every_tag(with_view: FeatureRegistry) -> None:
    with_view.create_feature_view(
        spec(name="rider_stats", entity="rider"), metadata(owner="team-b", tags={"tier": "gold"})
    )
    with_view.create_feature_view(
        spec(name="trip_stats"), metadata(owner="team-a", tags={"tier": "gold", "pii": "no"})
    )

    def names(owner: str = "", tags: dict[str, str] | None = None) -> list[str]:
        return [view.spec.name for view in with_view.list_feature_views(owner, tags)]

    assert names() == ["driver_stats", "rider_stats", "trip_stats"]
    assert names(owner="team-a") == ["driver_stats", "trip_stats"]
    assert names(tags={"tier": "gold", "pii": "no"}) == ["trip_stats"]
    assert names(owner="team-b", tags={"tier": "gold"}) == ["rider_stats"]
    assert names(tags={"tier": "silver"}) == []


def test_list_shows_the_latest_version(with_view: FeatureRegistry) -> None:
    with_view.create_feature_view_version(spec(ttl_seconds=10))
    (listed,) = with_view.list_feature_views()
    assert (listed.version, listed.spec.ttl_seconds) == (2, 10)
