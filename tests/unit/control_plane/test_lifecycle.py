"""ACTIVE -> DEPRECATED -> RETIRED, deletes, and the reference guards that refuse them."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2
from clients.errors import FailedPrecondition, InvalidArgument, NotFound
from control_plane.db.models import FeatureViewRow
from control_plane.features.registry import FeatureRegistry
from tests.unit.control_plane.builders import entity, metadata, spec


class PinnedVersions:
    """A reference guard: the shape the model registry will have, holding (view, version) pins of
    named consumers. It reads the view through the registry's session to show it runs in its
    transaction."""

    def __init__(self) -> None:
        self.pins: dict[tuple[str, int], str] = {}

    def references(self, session: Session, view: str, version: int | None) -> list[str]:
        assert session.scalar(select(FeatureViewRow.name).where(FeatureViewRow.name == view)) == view
        return [
            holder
            for (pinned_view, pinned_version), holder in sorted(self.pins.items())
            if pinned_view == view and version in (None, pinned_version)
        ]


@pytest.fixture
def guard() -> PinnedVersions:
    return PinnedVersions()


@pytest.fixture
def two_versions(registry: FeatureRegistry, guard: PinnedVersions) -> FeatureRegistry:
    registry.add_guard(guard)
    registry.create_entity(entity())
    registry.create_feature_view(spec(), metadata())
    registry.create_feature_view_version(spec(ttl_seconds=60))
    return registry


def status(registry: FeatureRegistry, version: int) -> int:
    return registry.get_feature_view("driver_stats", version).status


def test_deprecate_then_retire(two_versions: FeatureRegistry) -> None:
    assert two_versions.deprecate_version("driver_stats", 1).status == types_pb2.DEPRECATED
    assert status(two_versions, 1) == types_pb2.DEPRECATED
    assert two_versions.retire_version("driver_stats", 1).status == types_pb2.RETIRED
    assert status(two_versions, 1) == types_pb2.RETIRED  # still inspectable by number
    assert status(two_versions, 2) == types_pb2.ACTIVE


def test_transitions_out_of_order_are_refused(two_versions: FeatureRegistry) -> None:
    with pytest.raises(
        FailedPrecondition, match="version 1 is ACTIVE; only a version that is DEPRECATED can become RETIRED"
    ):
        two_versions.retire_version("driver_stats", 1)
    two_versions.deprecate_version("driver_stats", 1)
    with pytest.raises(FailedPrecondition, match="is DEPRECATED"):
        two_versions.deprecate_version("driver_stats", 1)
    two_versions.retire_version("driver_stats", 1)
    with pytest.raises(FailedPrecondition, match="is RETIRED"):
        two_versions.deprecate_version("driver_stats", 1)
    assert status(two_versions, 1) == types_pb2.RETIRED


def test_lifecycle_needs_an_existing_explicit_version(two_versions: FeatureRegistry) -> None:
    with pytest.raises(NotFound, match="no version 7"):
        two_versions.deprecate_version("driver_stats", 7)
    with pytest.raises(InvalidArgument, match=r"^version:"):
        two_versions.deprecate_version("driver_stats", 0)
    with pytest.raises(NotFound, match="'ghost'"):
        two_versions.deprecate_version("ghost", 1)
    # Beyond the version column's 32 bits: PostgreSQL refused even to compare it (INTERNAL).
    for version in (2**31, 2**32 - 1):
        with pytest.raises(NotFound, match=f"no version {version}"):
            two_versions.get_feature_view("driver_stats", version)
        with pytest.raises(NotFound, match=f"no version {version}"):
            two_versions.deprecate_version("driver_stats", version)


def test_latest_skips_retired_versions(two_versions: FeatureRegistry) -> None:
    for version in (2, 1):
        two_versions.deprecate_version("driver_stats", version)
    two_versions.retire_version("driver_stats", 2)
    assert two_versions.get_feature_view("driver_stats").version == 1
    assert [view.version for view in two_versions.list_feature_views()] == [1]

    two_versions.retire_version("driver_stats", 1)
    with pytest.raises(NotFound, match="no version that is not retired"):
        two_versions.get_feature_view("driver_stats")
    assert two_versions.list_feature_views() == []
    assert [view.version for view in two_versions.list_feature_views(include_retired=True)] == [2]
    assert len(two_versions.list_feature_view_versions("driver_stats")) == 2


def test_feature_descriptions_go_to_the_latest_version_that_is_not_retired(
    two_versions: FeatureRegistry,
) -> None:
    # They went to the highest-numbered version even when retired: invisible, since the view shows v1.
    two_versions.deprecate_version("driver_stats", 2)
    two_versions.retire_version("driver_stats", 2)

    updated = two_versions.update_feature_view_metadata("driver_stats", None, {"trips": "trips per day"})

    assert updated.version == 1 and updated.spec.features[0].description == "trips per day"
    assert two_versions.get_feature_view("driver_stats").spec.features[0].description == "trips per day"
    assert two_versions.get_feature_view("driver_stats", 2).spec.features[0].description == ""
    two_versions.deprecate_version("driver_stats", 1)
    two_versions.retire_version("driver_stats", 1)
    with pytest.raises(NotFound, match="no version that is not retired"):
        two_versions.update_feature_view_metadata("driver_stats", None, {"trips": "x"})
    owned = two_versions.update_feature_view_metadata("driver_stats", metadata(owner="team-b"))
    assert owned.metadata.owner == "team-b"  # metadata belongs to the view: still editable


def test_snapshot_serves_active_and_deprecated_but_not_retired(two_versions: FeatureRegistry) -> None:
    two_versions.create_feature_view_version(spec(ttl_seconds=120))
    two_versions.deprecate_version("driver_stats", 1)
    two_versions.retire_version("driver_stats", 1)
    two_versions.deprecate_version("driver_stats", 2)

    snapshot = two_versions.snapshot()

    assert [(view.version, view.status) for view in snapshot.views] == [
        (2, types_pb2.DEPRECATED),
        (3, types_pb2.ACTIVE),
    ]
    assert [e.name for e in snapshot.entities] == ["driver"]
    assert snapshot.revision == two_versions.revision()


def test_guard_refuses_retire_while_referenced(two_versions: FeatureRegistry, guard: PinnedVersions) -> None:
    guard.pins[("driver_stats", 1)] = "model 'eta' version 3"
    two_versions.deprecate_version("driver_stats", 1)

    with pytest.raises(FailedPrecondition, match="still referenced by model 'eta' version 3"):
        two_versions.retire_version("driver_stats", 1)
    assert status(two_versions, 1) == types_pb2.DEPRECATED

    del guard.pins[("driver_stats", 1)]
    assert two_versions.retire_version("driver_stats", 1).status == types_pb2.RETIRED


def test_guard_refuses_delete_while_any_version_is_referenced(
    two_versions: FeatureRegistry, guard: PinnedVersions
) -> None:
    guard.pins[("driver_stats", 2)] = "model 'eta' version 1"
    with pytest.raises(
        FailedPrecondition, match="cannot delete feature view 'driver_stats': still referenced by model"
    ):
        two_versions.delete_feature_view("driver_stats")
    assert len(two_versions.list_feature_view_versions("driver_stats")) == 2

    guard.pins.clear()
    two_versions.delete_feature_view("driver_stats")
    with pytest.raises(NotFound, match="feature view 'driver_stats' not found"):
        two_versions.get_feature_view("driver_stats")


def test_a_view_created_again_after_a_delete_never_reuses_a_version(two_versions: FeatureRegistry) -> None:
    # Reusing version 1 would give the new view the deleted one's online keys, offline-store folder and
    # (with the same features) schema fingerprint: its leftover values would be served as the new view's.
    old = two_versions.get_feature_view("driver_stats", 1)
    two_versions.delete_feature_view("driver_stats")

    created = two_versions.create_feature_view(spec(), metadata())

    assert (created.version, created.latest_version) == (3, 3)
    assert created.schema_fingerprint != old.schema_fingerprint
    assert [v.version for v in two_versions.list_feature_view_versions("driver_stats")] == [3]
    with pytest.raises(NotFound, match="has no version 1 \\(latest is 3\\)"):
        two_versions.get_feature_view("driver_stats", 1)
    assert two_versions.create_feature_view_version(spec(ttl_seconds=60)).version == 4
    two_versions.delete_feature_view("driver_stats")
    assert two_versions.create_feature_view(spec(), metadata()).version == 5


def test_entity_delete_is_refused_while_views_use_it(two_versions: FeatureRegistry) -> None:
    with pytest.raises(FailedPrecondition, match="used by feature views driver_stats"):
        two_versions.delete_entity("driver")
    two_versions.delete_feature_view("driver_stats")
    two_versions.delete_entity("driver")
    assert two_versions.list_entities() == []
    with pytest.raises(NotFound, match="entity 'driver' not found"):
        two_versions.delete_entity("driver")


def test_every_mutation_bumps_the_revision_and_nothing_else_does(two_versions: FeatureRegistry) -> None:
    start = two_versions.revision()
    two_versions.get_feature_view("driver_stats")
    two_versions.list_feature_views()
    two_versions.snapshot()
    with pytest.raises(FailedPrecondition):
        two_versions.retire_version("driver_stats", 1)
    assert two_versions.revision() == start

    two_versions.deprecate_version("driver_stats", 1)
    two_versions.update_feature_view_metadata("driver_stats", metadata(owner="x"))
    two_versions.create_entity(entity("rider"))
    two_versions.delete_entity("rider")
    assert two_versions.revision() == start + 4


def test_listeners_hear_each_committed_change_once(two_versions: FeatureRegistry) -> None:
    heard: list[int] = []
    two_versions.add_listener(heard.append)
    start = two_versions.revision()

    with pytest.raises(FailedPrecondition):
        two_versions.retire_version("driver_stats", 1)  # refused: rolled back, nothing to hear
    two_versions.deprecate_version("driver_stats", 1)
    two_versions.apply(pb.ApplyRequest(entities=[entity("rider")], dry_run=True))
    two_versions.apply(pb.ApplyRequest(entities=[entity("rider")]))
    two_versions.apply(pb.ApplyRequest(entities=[entity("rider")]))  # no change

    assert heard == [start + 1, start + 2]
