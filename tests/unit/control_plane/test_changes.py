"""The version decision against a brute-force reference: a new version is needed exactly when the
versioned projection of the spec differs, whatever descriptions and validation rules do."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2
from control_plane.features.changes import feature_detail_changes, versioned_changes

NAMES = st.sampled_from(["a", "b", "c", "d"])
TYPES = st.sampled_from(
    [types_pb2.FLOAT32, types_pb2.FLOAT64, types_pb2.INT32, types_pb2.INT64, types_pb2.BOOL]
)


@st.composite
def specs(draw: st.DrawFn) -> pb.FeatureViewSpec:
    names = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
    features = [
        pb.Feature(
            name=name,
            value_type=draw(TYPES),
            description=draw(st.sampled_from(["", "x"])),
            validation=pb.ValidationRule(max_null_fraction=draw(st.sampled_from([0.0, 0.5]))),
        )
        for name in names
    ]
    aggregations = [
        pb.Aggregation(
            column="fare",
            function=draw(st.sampled_from(["sum", "max"])),
            window_seconds=draw(st.sampled_from([60, 3600])),
            output=output,
        )
        for output in draw(st.lists(st.sampled_from(names), max_size=2, unique=True))
    ]
    return pb.FeatureViewSpec(
        name="v",
        entity=draw(st.sampled_from(["driver", "rider"])),
        features=features,
        source=pb.Source(
            kind=draw(st.sampled_from(["batch", "stream"])), uri=draw(st.sampled_from(["p", "q"]))
        ),
        ttl_seconds=draw(st.sampled_from([0, 60])),
        aggregations=aggregations,
    )


def versioned_projection(spec: pb.FeatureViewSpec) -> tuple[object, ...]:
    return (
        spec.entity,
        [(feature.name, feature.value_type) for feature in spec.features],
        (spec.source.kind, spec.source.uri, spec.source.timestamp_field),
        spec.ttl_seconds,
        [(agg.column, agg.function, agg.window_seconds, agg.output) for agg in spec.aggregations],
    )


@given(specs(), specs())
def test_new_version_exactly_when_the_versioned_projection_differs(
    old: pb.FeatureViewSpec, new: pb.FeatureViewSpec
) -> None:
    changes = versioned_changes(old, new)
    assert bool(changes) == (versioned_projection(old) != versioned_projection(new))
    assert versioned_changes(new, new) == []


@given(specs(), specs())
def test_detail_changes_only_for_shared_features(old: pb.FeatureViewSpec, new: pb.FeatureViewSpec) -> None:
    before = {feature.name: feature for feature in old.features}
    expected = sum(
        (feature.description != before[feature.name].description)
        + (feature.validation != before[feature.name].validation)
        for feature in new.features
        if feature.name in before
    )
    assert len(feature_detail_changes(old, new)) == expected
