"""Declarative apply: the plan, idempotence, all-or-nothing, and errors that point into the request."""

from __future__ import annotations

import pytest

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2
from clients.errors import InvalidArgument
from control_plane.features.definitions import parse_definitions
from control_plane.features.registry import FeatureRegistry
from tests.support.legacy_views import store_view_as_before_aggregate_rule_checks
from tests.unit.control_plane.builders import entity, metadata, spec, view


def request(
    *views: pb.FeatureView, entities: tuple[pb.Entity, ...] = (entity(),), dry_run: bool = False
) -> pb.ApplyRequest:
    return pb.ApplyRequest(entities=entities, views=views, dry_run=dry_run)


def plan(response: pb.ApplyResponse) -> list[tuple[str, str, str, int, list[str]]]:
    return [
        (step.kind, step.name, pb.PlanAction.Name(step.action), step.version, list(step.changes))
        for step in response.steps
    ]


def test_first_apply_creates_and_second_changes_nothing(registry: FeatureRegistry) -> None:
    definitions = request(view(spec(), metadata(tags={"tier": "gold"})), view(spec(name="trip_stats")))

    first = registry.apply(definitions)
    revision = registry.revision()
    second = registry.apply(definitions)

    assert first.applied and plan(first) == [
        ("entity", "driver", "CREATE", 0, ["join keys: driver_id (int64)"]),
        ("feature_view", "driver_stats", "CREATE", 1, ["entity driver, 2 features"]),
        ("feature_view", "trip_stats", "CREATE", 1, ["entity driver, 2 features"]),
    ]
    assert registry.get_feature_view("driver_stats").metadata.tags == {"tier": "gold"}
    assert plan(second) == [
        ("entity", "driver", "NO_CHANGE", 0, []),
        ("feature_view", "driver_stats", "NO_CHANGE", 1, []),
        ("feature_view", "trip_stats", "NO_CHANGE", 1, []),
    ]
    assert registry.revision() == revision  # nothing changed, so watchers are not woken


def test_plan_names_each_change(registry: FeatureRegistry) -> None:
    registry.apply(request(view(spec()), view(spec(name="trip_stats"))))
    changed_layout = spec(
        features=[("trips", types_pb2.INT32), ("rating", types_pb2.FLOAT32)], ttl_seconds=7200
    )

    response = registry.apply(
        request(
            view(changed_layout, metadata(owner="team-b")),
            view(spec(name="trip_stats", descriptions={"trips": "count"}), metadata(owner="team-b")),
            entities=(entity(description="a person who drives"),),
        )
    )

    assert plan(response) == [
        ("entity", "driver", "UPDATE_METADATA", 0, ["description: '' -> a person who drives"]),
        (
            "feature_view",
            "driver_stats",
            "NEW_VERSION",
            2,
            ["feature trips: dtype int64 -> int32", "ttl: 3600 -> 7200", "owner: team-a -> team-b"],
        ),
        (
            "feature_view",
            "trip_stats",
            "UPDATE_METADATA",
            1,
            ["owner: team-a -> team-b", "feature trips: description changed"],
        ),
    ]
    assert registry.get_feature_view("driver_stats", 1).spec == spec()
    assert registry.get_feature_view("driver_stats").spec == changed_layout
    assert registry.get_feature_view("trip_stats").spec.features[0].description == "count"
    assert registry.get_entity("driver").description == "a person who drives"


def test_dry_run_plans_without_applying(registry: FeatureRegistry) -> None:
    response = registry.apply(request(view(spec()), dry_run=True))

    assert not response.applied
    assert [pb.PlanAction.Name(step.action) for step in response.steps] == ["CREATE", "CREATE"]
    assert registry.list_entities() == [] and registry.list_feature_views() == []
    assert registry.revision() == 0


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_view_too_large_to_list_is_refused_by_its_dry_run_too(
    registry: FeatureRegistry, dry_run: bool
) -> None:
    # The dry run returned before the size check: a clean CREATE plan that the Apply then refused.
    too_large = view(spec(), metadata("x" * (3 * 1024 * 1024)))
    with pytest.raises(InvalidArgument, match="feature view 'driver_stats' version 1 would take"):
        registry.apply(request(too_large, dry_run=dry_run))
    assert registry.list_entities() == [] and registry.list_feature_views() == []
    assert registry.revision() == 0


def test_an_error_in_the_last_item_leaves_nothing_applied(registry: FeatureRegistry) -> None:
    registry.apply(request(view(spec())))
    before = (registry.list_entities(), registry.list_feature_views(), registry.revision())
    # Everything before the last view is valid and gets written inside the transaction first.
    bad = request(
        view(spec(ttl_seconds=5)),
        view(spec(name="rider_stats", entity="rider")),
        view(spec(name="broken", entity="drivr")),
        entities=(entity(), entity("rider", (("rider_id", types_pb2.STRING),))),
    )

    with pytest.raises(InvalidArgument, match=r"^views\[2\]\.spec\.entity: entity 'drivr' not found$"):
        registry.apply(bad)

    assert (registry.list_entities(), registry.list_feature_views(), registry.revision()) == before
    assert len(registry.list_feature_view_versions("driver_stats")) == 1


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            request(view(spec(features=[("trips", types_pb2.INT64), ("name", types_pb2.STRING)]))),
            r"^views\[0\]\.spec\.features\[1\]\.value_type: unsupported type string for a feature",
        ),
        (
            request(view(spec()), view(spec())),
            r"^views\[1\]\.spec\.name: duplicate feature view 'driver_stats' \(also views\[0\]\)",
        ),
        (
            request(entities=(entity(), entity("Bad-Name"))),
            r"^entities\[1\]\.name: invalid entity name 'Bad-Name'",
        ),
        (
            request(view(spec(), metadata(tags={"": "x"}))),
            r"^views\[0\]\.metadata\.tags: tag names must not be empty",
        ),
    ],
)
def test_validation_errors_start_with_the_item_path(
    registry: FeatureRegistry, bad: pb.ApplyRequest, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        registry.apply(bad)
    assert registry.list_entities() == []


def test_entity_join_keys_cannot_change(registry: FeatureRegistry) -> None:
    registry.apply(request())
    changed = entity(keys=(("driver_id", types_pb2.STRING),))
    with pytest.raises(
        InvalidArgument, match=r"^entities\[0\]\.join_keys: join keys of existing entity 'driver'"
    ):
        registry.apply(request(entities=(changed,)))
    assert registry.get_entity("driver").join_keys[0].value_type == types_pb2.INT64


def test_reapplying_a_retired_spec_makes_a_new_version(registry: FeatureRegistry) -> None:
    registry.apply(request(view(spec())))
    registry.deprecate_version("driver_stats", 1)
    registry.retire_version("driver_stats", 1)

    response = registry.apply(request(view(spec())))

    assert plan(response)[1] == (
        "feature_view",
        "driver_stats",
        "NEW_VERSION",
        2,
        ["latest version is retired"],
    )
    assert registry.get_feature_view("driver_stats").status == types_pb2.ACTIVE


def test_applying_a_deleted_view_again_continues_its_versions(registry: FeatureRegistry) -> None:
    registry.apply(request(view(spec())))
    registry.apply(request(view(spec(ttl_seconds=60))))
    registry.delete_feature_view("driver_stats")

    dry_run = registry.apply(request(view(spec()), dry_run=True))
    response = registry.apply(request(view(spec())))

    expected = ("feature_view", "driver_stats", "CREATE", 3, ["entity driver, 2 features"])
    assert plan(dry_run)[1] == plan(response)[1] == expected
    assert registry.get_feature_view("driver_stats").version == 3


LEGACY_YAML = """
entities:
  - name: sensor
    join_keys: [{name: sensor_id, type: int64}]
feature_views:
  - name: clicks
    entity: sensor
    source: {kind: stream, uri: "events:clicks"}
    features:
      - {name: amount_sum_1h, dtype: float64, validation: {min: 0, max: %(sum_max)s}}
      - {name: amount_mean_1h, dtype: float64}
    aggregations:
      - {column: amount, function: sum, window: %(window)s, output: amount_sum_1h}
      - {column: amount, function: mean, window: 1h, output: amount_mean_1h}
  - name: climate
    entity: sensor
    description: %(climate)s
    features:
      - {name: temperature_c, dtype: float32}
"""


def legacy_request(sum_max: str = "100", window: str = "1h", climate: str = "hourly") -> pb.ApplyRequest:
    text = LEGACY_YAML % {"sum_max": sum_max, "window": window, "climate": climate}
    return parse_definitions(text).request


def test_an_unchanged_view_stored_with_a_rule_refused_since_applies_as_no_change(
    registry: FeatureRegistry,
) -> None:
    """``clicks`` was stored before rules on aggregates were checked, with a max of 100 on a sum (refused
    now). Re-applying its unchanged YAML failed INVALID_ARGUMENT, dry run or not, and so did an apply of
    unrelated changes in the same file: the check ran on every view before comparing with what is stored.
    It now runs on new views, new versions and rule edits only."""
    original = legacy_request()
    registry.create_entity(original.entities[0])
    store_view_as_before_aggregate_rule_checks(registry.sessions, original.views[0].spec)
    registry.create_feature_view(original.views[1].spec, original.views[1].metadata)

    for dry_run in (True, False):
        again = legacy_request()
        again.dry_run = dry_run
        assert [pb.PlanAction.Name(step.action) for step in registry.apply(again).steps] == [
            "NO_CHANGE", "NO_CHANGE", "NO_CHANGE"
        ]  # fmt: skip
    unrelated = registry.apply(legacy_request(climate="daily"))
    assert plan(unrelated)[1:] == [
        ("feature_view", "clicks", "NO_CHANGE", 1, []),
        ("feature_view", "climate", "UPDATE_METADATA", 1, ["description: hourly -> daily"]),
    ]

    # An edit of the rule, or a new version carrying it, is checked, and the error says where to fix it.
    hint = "fix the stored rule with UpdateValidation or a rule edit in this file"
    with pytest.raises(InvalidArgument, match=r"^views\[0\]\.spec\.features\[0\]\.validation: .*max_value"):
        registry.apply(legacy_request(sum_max="200"))
    with pytest.raises(InvalidArgument, match=f"version 1 stores this rule.*{hint}"):
        registry.apply(legacy_request(window="2h"))
    fixed = registry.apply(legacy_request(sum_max=".inf"))  # no upper bound: enforceable
    assert plan(fixed)[1][2:4] == ("UPDATE_METADATA", 1)
