"""The event rules of a rule on an aggregate (control_plane/features/aggregated_rules.py) when the rule
is one the registry refuses now but an old registry stored: its enforceable parts are kept."""

from __future__ import annotations

import pytest

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2 as t
from control_plane.features.aggregated_rules import input_rules, rule_problem


def spec_with(function: str, rule: pb.ValidationRule) -> pb.FeatureViewSpec:
    aggregation = pb.Aggregation(column="fare", function=function, window_seconds=3600, output="out")
    feature = pb.Feature(name="out", value_type=t.FLOAT64, validation=rule)
    return pb.FeatureViewSpec(name="v", entity="e", features=[feature], aggregations=[aggregation])


@pytest.mark.parametrize(
    ("function", "rule", "kept"),
    [
        # Refused for max 100 (events each below it can sum above it); min 0 is still held per event.
        ("sum", pb.ValidationRule(min_value=0, max_value=100), pb.ValidationRule(min_value=0)),
        ("sum", pb.ValidationRule(min_value=-5, max_value=-1), pb.ValidationRule(max_value=-1)),
        # Categories on a mean are refused (a mean need not be one); its range holds per event.
        ("mean", pb.ValidationRule(min_value=0, allowed_values=[1, 2]), pb.ValidationRule(min_value=0)),
    ],
    ids=["sum-min-kept", "sum-max-kept", "mean-range-kept"],
)
def test_a_refused_rule_keeps_its_enforceable_parts(
    function: str, rule: pb.ValidationRule, kept: pb.ValidationRule
) -> None:
    spec = spec_with(function, rule)
    assert rule_problem(spec.aggregations[0], rule) is not None  # refused today, stored by an old registry
    (derived,) = input_rules(spec)
    assert (derived.field, derived.feature, derived.rule) == ("fare", "out", kept)


def test_a_rule_with_nothing_enforceable_gives_no_event_rule() -> None:
    assert input_rules(spec_with("sum", pb.ValidationRule(min_value=-1, max_value=1))) == []
    assert input_rules(spec_with("count", pb.ValidationRule(min_value=1, max_value=9))) == []
