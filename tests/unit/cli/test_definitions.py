"""Parsing YAML feature definitions: the request they become, and where each problem is reported."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from google.protobuf import text_format

from clients.aether.v1 import feature_registry_pb2 as pb
from control_plane.features.definitions import (
    DefinitionError,
    Problem,
    load_definitions,
    parse_definitions,
)

REPO = Path(__file__).resolve().parents[3]

VALID = """\
entities:
  - name: zone
    description: A city zone
    join_keys: [{name: zone_id, type: int64}]
feature_views:
  - name: zone_weather
    entity: zone
    description: Weather per zone
    owner: data-team
    tags: {domain: weather, tier: 1}
    ttl: 2h
    source: {kind: batch, uri: data/weather.parquet, timestamp_field: event_ts}
    features:
      - name: temperature_c
        dtype: float32
        description: Air temperature
        validation: {min: -50, max: 60, max_null_fraction: 0.01}
      - name: is_raining
        dtype: bool
        validation: {allowed: [0, 1]}
  - name: zone_demand
    entity: zone
    ttl: 900
    source: {kind: stream, uri: bookings}
    features:
      - {name: bookings_1h, dtype: int64}
    aggregations:
      - {column: booking_id, function: count, window: 1h, output: bookings_1h}
"""

EXPECTED = """
entities {
  name: "zone" description: "A city zone"
  join_keys { name: "zone_id" value_type: INT64 }
}
views {
  spec {
    name: "zone_weather" entity: "zone" ttl_seconds: 7200
    source { kind: "batch" uri: "data/weather.parquet" timestamp_field: "event_ts" }
    features {
      name: "temperature_c" value_type: FLOAT32 description: "Air temperature"
      validation { min_value: -50 max_value: 60 max_null_fraction: 0.01 }
    }
    features { name: "is_raining" value_type: BOOL validation { allowed_values: [0, 1] } }
  }
  metadata {
    description: "Weather per zone" owner: "data-team"
    tags { key: "domain" value: "weather" }
    tags { key: "tier" value: "1" }
  }
}
views {
  spec {
    name: "zone_demand" entity: "zone" ttl_seconds: 900
    source { kind: "stream" uri: "bookings" }
    features { name: "bookings_1h" value_type: INT64 }
    aggregations { column: "booking_id" function: "count" window_seconds: 3600 output: "bookings_1h" }
  }
  metadata {}
}
"""


def test_a_valid_file_becomes_the_expected_apply_request() -> None:
    definitions = parse_definitions(VALID, "features.yaml")
    expected = text_format.Parse(EXPECTED, pb.ApplyRequest())
    assert definitions.request == expected
    assert not definitions.request.dry_run


def test_unset_validation_bounds_stay_unset() -> None:
    rule = parse_definitions(VALID).request.views[0].spec.features[1].validation
    assert not rule.HasField("min_value") and not rule.HasField("max_value")


def test_request_paths_point_at_their_yaml_lines_and_fields() -> None:
    definitions = parse_definitions(VALID, "features.yaml")
    feature = definitions.locate("views[0].spec.features[1].value_type")
    assert feature is not None and (feature.line, feature.field) == (19, "feature_views[0].features[1].dtype")
    ttl = definitions.locate("views[1].spec.ttl_seconds")
    assert ttl is not None and (ttl.line, ttl.field) == (23, "feature_views[1].ttl")
    # A path below what the file spells out is placed on its closest ancestor, keeping the rest.
    tag = definitions.locate("views[0].metadata.tags[team]")
    assert tag is not None and (tag.line, tag.field) == (10, "feature_views[0].tags[team]")
    entity = definitions.locate("views[1].spec")
    assert entity is not None and (entity.line, entity.field) == (21, "feature_views[1]")
    assert definitions.locate("models[0].name") is None


def test_server_messages_with_a_request_path_are_explained_against_the_file() -> None:
    definitions = parse_definitions(VALID, "features.yaml")
    explained = definitions.explain("views[1].spec.entity: unknown entity 'zone'")
    assert explained == "features.yaml:22: feature_views[1].entity: unknown entity 'zone'"
    assert definitions.explain("entities[0].join_keys[0]: bad key") == (
        "features.yaml:4: entities[0].join_keys[0]: bad key"
    )
    assert definitions.explain("database is locked") is None


def test_the_shipped_example_is_valid() -> None:
    request = load_definitions(REPO / "examples" / "features.yaml").request
    assert [entity.name for entity in request.entities] == ["zone"]
    assert [view.spec.name for view in request.views] == ["zone_weather", "zone_demand"]
    assert all(view.spec.features for view in request.views)


def _problems(text: str) -> list[Problem]:
    with pytest.raises(DefinitionError) as raised:
        parse_definitions(textwrap.dedent(text), "defs.yaml")
    return raised.value.problems


ENTITY = "entities:\n  - {name: zone, join_keys: [{name: zone_id, type: int64}]}\n"
VIEW = ENTITY + "feature_views:\n  - name: v\n    entity: zone\n"  # a view open for more keys, at line 4


@pytest.mark.parametrize(
    ("text", "line", "field", "fragment"),
    [
        pytest.param("entities:\n  - name: zone\n   join_keys: []\n", 3, "", "invalid YAML", id="indent"),
        pytest.param("entities: [\n", 2, "", "invalid YAML", id="yaml-unclosed"),
        pytest.param("", 1, "", "defines nothing", id="empty-file"),
        pytest.param("- a\n- b\n", 1, "", "expected a mapping", id="top-level-list"),
        pytest.param("entitys: []\n", 1, "entitys", "did you mean 'entities'", id="unknown-top-key"),
        pytest.param(
            VIEW + "    owner: me\n    descripton: x\n"
            "    features: [{name: f, dtype: float32}]\n",
            7, "feature_views[0].descripton", "did you mean 'description'", id="typo-in-view-key",
        ),
        pytest.param(
            ENTITY + "feature_views:\n  - name: v\n    features: [{name: f, dtype: float32}]\n",
            4, "feature_views[0]", "missing required key 'entity'", id="missing-required",
        ),
        pytest.param(
            VIEW + "    features:\n      - {name: f}\n",
            7, "feature_views[0].features[0]", "missing required key 'dtype'", id="missing-dtype",
        ),
        pytest.param(
            VIEW + "    features:\n"
            "      - name: a\n        dtype: float32\n      - name: b\n        dtype: flot32\n",
            10, "feature_views[0].features[1].dtype", "unknown type 'flot32'; expected one of float32",
            id="unknown-dtype",
        ),
        pytest.param(
            VIEW + "    features: [{name: f, dtype: string}]\n",
            6, "feature_views[0].features[0].dtype", "unknown type 'string'", id="string-feature",
        ),
        pytest.param(
            ENTITY + "feature_views:\n  - name: v\n    entity: [zone]\n"
            "    features: [{name: f, dtype: float32}]\n",
            5, "feature_views[0].entity", "expected a single value, got a list", id="wrong-type-list",
        ),
        pytest.param(
            VIEW + "    owner: 5\n"
            "    features: [{name: f, dtype: float32}]\n",
            6, "feature_views[0].owner", "expected a string, got an integer", id="wrong-type-int",
        ),
        pytest.param(
            VIEW + "    ttl: 2 hours\n"
            "    features: [{name: f, dtype: float32}]\n",
            6, "feature_views[0].ttl", "invalid duration '2 hours'", id="bad-duration",
        ),
        pytest.param(
            VIEW + "    ttl: -5\n"
            "    features: [{name: f, dtype: float32}]\n",
            6, "feature_views[0].ttl", "must not be negative", id="negative-duration",
        ),
        pytest.param(
            VIEW + "    features: [{name: f, dtype: float32}]\n"
            "  - name: v\n    entity: zone\n    features: [{name: g, dtype: float32}]\n",
            7, "feature_views[1].name", "duplicate feature view 'v' (first defined on line 4)",
            id="duplicate-view",
        ),
        pytest.param(
            VIEW + "    features:\n"
            "      - {name: f, dtype: float32}\n      - {name: f, dtype: int64}\n",
            8, "feature_views[0].features[1].name", "duplicate feature 'f'", id="duplicate-feature",
        ),
        pytest.param(
            ENTITY + "  - {name: zone, join_keys: [{name: k, type: string}]}\n",
            3, "entities[1].name", "duplicate entity 'zone'", id="duplicate-entity",
        ),
        pytest.param(
            VIEW + "    owner: a\n    owner: b\n"
            "    features: [{name: f, dtype: float32}]\n",
            7, "feature_views[0].owner", "duplicate key 'owner'", id="duplicate-yaml-key",
        ),
        pytest.param(
            VIEW + "    features:\n"
            "      - {name: f, dtype: float32, validation: {min: 5, max: 1}}\n",
            7, "feature_views[0].features[0].validation.max", "max 1 is below min 5", id="min-above-max",
        ),
        pytest.param(
            VIEW + "    features:\n"
            "      - {name: f, dtype: float32, validation: {allowed: [1, 2]}}\n",
            7, "feature_views[0].features[0].validation.allowed", "integer and bool features only",
            id="allowed-on-float",
        ),
        pytest.param(
            VIEW + "    features:\n"
            "      - {name: f, dtype: int32, validation: {max_null_fraction: 1.5}}\n",
            7, "feature_views[0].features[0].validation.max_null_fraction", "between 0 and 1",
            id="null-fraction-range",
        ),
        pytest.param(
            VIEW + "    features: [{name: f, dtype: int64}]\n"
            "    aggregations:\n      - {column: c, function: median, window: 1h, output: f}\n",
            8, "feature_views[0].aggregations[0].function", "unknown function 'median'", id="bad-aggregation",
        ),
        pytest.param(
            VIEW + "    features: [{name: f, dtype: int64}]\n"
            "    aggregations:\n      - {column: c, function: sum, window: 1h, output: g}\n",
            8, "feature_views[0].aggregations[0].output", "'g' is not a feature of this view",
            id="aggregation-output-undeclared",
        ),
        pytest.param(
            "entities:\n  - name: zone\n    join_keys: []\n",
            3, "entities[0].join_keys", "at least one join key", id="no-join-keys",
        ),
        pytest.param(
            "entities:\n  - {name: 'zone:1', join_keys: [{name: k, type: int64}]}\n",
            2, "entities[0].name", "invalid name 'zone:1'", id="bad-name",
        ),
        # Values the protobuf request cannot hold, and explicit tags the value does not fit: each used to
        # end `features apply` in a traceback.
        pytest.param(
            VIEW + "    ttl: 99999999999999999999\n    features: [{name: f, dtype: float32}]\n",
            6, "feature_views[0].ttl", "too long", id="ttl-beyond-int64",
        ),
        pytest.param(
            VIEW + "    features: [{name: f, dtype: float32}]\n"
            "    aggregations: [{column: x, function: sum, window: 999999999999999999d, output: f}]\n",
            7, "feature_views[0].aggregations[0].window", "too long", id="window-beyond-int64",
        ),
        pytest.param(
            VIEW + "    features:\n"
            "      - {name: f, dtype: int64, validation: {allowed: [1, 99999999999999999999]}}\n",
            7, "feature_views[0].features[0].validation.allowed[1]", "64-bit", id="category-beyond-int64",
        ),
        pytest.param(
            VIEW + "    features:\n"
            "      - {name: f, dtype: int64, validation: {max: 1" + "0" * 400 + "}}\n",
            7, "feature_views[0].features[0].validation.max",
            "100000... (401 digits) is beyond the range of a double", id="bound-beyond-double",
        ),
        pytest.param(
            VIEW + "    features:\n"
            "      - {name: f, dtype: int64, validation: {min: 9007199254740993}}\n",
            7, "feature_views[0].features[0].validation.min",
            "9007199254740993 is not exactly representable as a double, which a bound is (the nearest are"
            " 9007199254740992 and 9007199254740994)",
            id="bound-not-exact",
        ),
        # YAML keeps the last of two equal keys: the first tag's value was dropped without a word.
        pytest.param(
            VIEW + "    tags: {team: search, tier: 1, team: ads}\n"
            "    features: [{name: f, dtype: float32}]\n",
            6, "feature_views[0].tags.team", "duplicate tag 'team'", id="duplicate-tag",
        ),
        pytest.param(
            VIEW + "    ttl: !foo 5\n    features: [{name: f, dtype: float32}]\n",
            6, "feature_views[0].ttl", "could not determine a constructor", id="unknown-tag",
        ),
        pytest.param(
            VIEW + "    ttl: !!int abc\n    features: [{name: f, dtype: float32}]\n",
            6, "feature_views[0].ttl", "cannot read 'abc'", id="int-tag-on-text",
        ),
        pytest.param(
            "entities:\n  - name: zone\n    description: !!timestamp notatime\n"
            "    join_keys: [{name: zone_id, type: int64}]\n",
            3, "entities[0].description", "cannot read 'notatime'", id="timestamp-tag-on-text",
        ),
    ],
)  # fmt: skip
def test_each_problem_names_its_line_and_field(text: str, line: int, field: str, fragment: str) -> None:
    problems = _problems(text)
    assert any(p.line == line and p.field == field and fragment in p.message for p in problems), problems
    assert all(p.file == "defs.yaml" for p in problems)


def test_every_problem_of_a_file_is_reported_at_once_in_line_order() -> None:
    text = ENTITY + (
        "feature_views:\n  - name: v\n    entity: zone\n    ttl: soon\n"
        "    features:\n      - {name: f, dtype: flot32}\n      - {name: g, dtype: int64, colour: red}\n"
    )
    problems = _problems(text)
    assert [(p.line, p.field) for p in problems] == [
        (6, "feature_views[0].ttl"),
        (8, "feature_views[0].features[0].dtype"),
        (9, "feature_views[0].features[1].colour"),
    ]


@pytest.mark.parametrize("dtype", ["dtype: boolean, ", ""])
def test_allowed_values_are_not_blamed_for_a_dtype_that_is_unknown_or_missing(dtype: str) -> None:
    text = VIEW + "    features:\n      - {name: f, " + dtype + "validation: {allowed: [0, 1]}}\n"
    problems = _problems(text)
    assert [p.field for p in problems] == ["feature_views[0].features[0]" + (".dtype" if dtype else "")]


def test_the_error_message_reads_file_line_field_message() -> None:
    with pytest.raises(DefinitionError) as raised:
        parse_definitions(VIEW + "    features: 3\n", "f.yaml")
    assert str(raised.value) == "f.yaml:6: feature_views[0].features: expected a list, got an integer"


def test_an_unreadable_file_is_a_definition_error(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="cannot read file"):
        load_definitions(tmp_path / "missing.yaml")


def test_a_bound_beyond_2_53_that_a_double_holds_is_kept_exactly() -> None:
    text = VIEW + (
        "    features:\n"
        "      - {name: f, dtype: int64, validation: {min: -9007199254740994, max: 9223372036854775808}}\n"
        "      - {name: g, dtype: float64, validation: {max: 1.0e+23}}\n"
    )
    features = parse_definitions(text, "defs.yaml").request.views[0].spec.features
    assert (int(features[0].validation.min_value), int(features[0].validation.max_value)) == (
        -(2**53) - 2,
        2**63,
    )
    assert features[1].validation.max_value == 1e23
