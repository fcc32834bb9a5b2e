"""Rules on a streaming view's aggregated features, enforced on its events at ingestion.

Property (hypothesis): for every rule the registry accepts on an aggregate, the events ingestion accepts
build only windows whose aggregates pass that rule as stored, the retraining data-window check's test.
The windows are computed twice: by brute force over the accepted events in exact arithmetic (the
reference) and by the window kernel the materializer runs. A rule the registry refuses is one no rule on
single events could keep, shown by a counterexample."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2 as t
from clients.errors import InvalidArgument
from control_plane.features.validation import validate_spec
from control_plane.ingestion.validation import validate
from kernels.windows import FUNCTIONS, WindowState

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
ENTITY = pb.Entity(name="zone", join_keys=[pb.JoinKey(name="zone_id", value_type=t.INT64)])
BUCKET_S = 600
WINDOWS_S = (600, 1800)  # two windows of one rule: 3 buckets of 10 minutes


def view(function: str, value_type: int, rule: pb.ValidationRule) -> pb.FeatureView:
    """``function`` of event field ``fare`` over 10 and 30 minutes, both features under ``rule``."""
    names = [f"fare_{function}_{w // 60}m" for w in WINDOWS_S]
    return pb.FeatureView(
        spec=pb.FeatureViewSpec(
            name="zone_demand",
            entity="zone",
            source=pb.Source(kind="stream", uri="bookings"),
            features=[pb.Feature(name=name, value_type=value_type, validation=rule) for name in names],
            aggregations=[
                pb.Aggregation(column="fare", function=function, window_seconds=w, output=name)
                for w, name in zip(WINDOWS_S, names, strict=True)
            ],
        ),
        version=1,
    )


def reference(events: list[tuple[int, int, int, float]], function: str, window_s: int) -> list[float]:
    """After each event (zone, ts in s, seq, value): its zone's aggregate over the window as of the zone's
    newest event, the kernel's documented semantics, in exact arithmetic rounded once."""
    out = []
    for i, (zone, _ts, _seq, _value) in enumerate(events):
        seen = [e for e in events[: i + 1] if e[0] == zone]
        current = max(e[1] for e in seen) // BUCKET_S
        inside = [e for e in seen if current - window_s // BUCKET_S < e[1] // BUCKET_S <= current]
        values = [Fraction(e[3]) for e in inside]
        if function == "count":
            out.append(float(len(values)))
        elif function == "sum":
            out.append(float(sum(values)))
        elif function == "mean":
            out.append(float(sum(values) / len(values)))
        elif function == "min":
            out.append(float(min(values)))
        elif function == "max":
            out.append(float(max(values)))
        else:
            out.append(max(inside, key=lambda e: (e[1], e[2]))[3])
    return out


def kernel(events: list[tuple[int, int, int, float]], function: str) -> np.ndarray:
    state = WindowState(
        BUCKET_S * 10**6, max(WINDOWS_S) // BUCKET_S, 1, [0, 0], [FUNCTIONS.index(function)] * 2,
        [w // BUCKET_S for w in WINDOWS_S], capacity=3,
    )  # fmt: skip
    arrays = np.array([[e[0], e[1] * 10**6, e[2]] for e in events], dtype=np.int64).reshape(-1, 3)
    out, _ = state.apply(arrays[:, 0], arrays[:, 1], arrays[:, 2], np.array([[e[3]] for e in events]))
    return out


def stored_rejections(
    fv: pb.FeatureView, events: list[tuple[int, int, int, float]], rows: np.ndarray
) -> list[str]:
    """The reasons the retraining check's validation gives for the aggregate rows ``rows``."""
    columns: dict[str, object] = {
        "zone_id": pa.array([e[0] for e in events], pa.int64()),
        "event_ts": pa.array([NOW] * len(events), pa.timestamp("us", "UTC")),
    }
    for j, feature in enumerate(fv.spec.features):
        dtype = {t.FLOAT32: "float32", t.FLOAT64: "float64", t.INT64: "int64"}[feature.value_type]
        columns[feature.name] = pa.array(rows[:, j].astype(dtype))
    result = validate(fv, ENTITY, pa.table(columns), now=NOW, stored=True)
    return [str(reason) for reason in result.rejected.column("reason").to_pylist()]


def written(value: float) -> str:
    """A value as a stream message carries it: a whole number without a fraction (an integer field
    refuses "3.0")."""
    return str(int(value)) if value.is_integer() else repr(value)


BOUNDS = [-3.0, -1.0, 0.0, 0.1, 0.7, 1.0, 2.0, 5.5, math.inf, -math.inf]
functions = st.sampled_from(["count", "sum", "mean", "min", "max", "last"])
bounds = st.one_of(st.none(), st.sampled_from(BOUNDS), st.floats(-10, 10))
categories = st.one_of(st.just([]), st.lists(st.integers(-3, 5), min_size=1, max_size=4))
# Values at the bounds themselves (0.1 three times: a float64 mean of them rounds above 0.1) and between.
values = st.one_of(
    st.sampled_from([b for b in BOUNDS if math.isfinite(b)]), st.floats(-10, 10), st.integers(-3, 5)
)
event_lists = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 3 * 3600), values), min_size=1, max_size=40
)


@settings(max_examples=400, deadline=None)
@given(functions, st.booleans(), bounds, bounds, categories, event_lists)
@example("mean", True, None, 0.1, [], [(0, 0, 0.1), (0, 1, 0.1), (0, 2, 0.1)])
@example("mean", False, 0.7, None, [], [(0, 0, 0.7), (0, 1, 0.7), (0, 2, 0.7)])
@example("mean", False, 0.0, None, [], [(0, 0, -5.0)])
@example("sum", True, 0.0, None, [], [(0, 0, -1.0), (0, 1, 3.0)])
@example("count", True, None, 3.0, [], [(0, 0, 1.0), (0, 1, 1.0), (0, 2, 1.0), (0, 3, 1.0)])
@example("sum", False, -1.0, None, [], [(0, 0, -1.0), (0, 1, -1.0)])
@example("last", True, None, None, [1, 2], [(0, 0, 3.0), (0, 1, 1.0)])
def test_accepted_events_build_only_windows_that_pass_the_rule(
    function: str,
    integral: bool,
    low: float | None,
    high: float | None,
    allowed: list[int],
    raw: list[tuple[int, int, float]],
) -> None:
    if function == "mean":
        value_type = t.FLOAT64 if integral else t.FLOAT32
    else:
        value_type = t.INT64 if integral else t.FLOAT64
    rule = pb.ValidationRule(allowed_values=allowed if value_type == t.INT64 else [])
    if low is not None:
        rule.min_value = low
    if high is not None:
        rule.max_value = high
    fv = view(function, value_type, rule)
    try:
        validate_spec(fv.spec)
    except InvalidArgument:
        assume(False)  # refused at definition: see the tests below
    table = pa.table(
        {
            "zone_id": [zone for zone, _, _ in raw],
            "event_ts": [(NOW - timedelta(seconds=3 * 3600 - ts)).isoformat() for _, ts, _ in raw],
            "fare": [written(float(value)) for _, _, value in raw],
        }
    )
    accepted = validate(fv, ENTITY, table, now=NOW).accepted
    events = [
        (zone, int(ts.timestamp()) - int(NOW.timestamp()) + 3 * 3600, seq, float(fare))
        for seq, (zone, ts, fare) in enumerate(
            zip(*(accepted.column(c).to_pylist() for c in ("zone_id", "event_ts", "fare")), strict=True)
        )
    ]
    if not events:
        return
    exact = np.array([reference(events, function, w) for w in WINDOWS_S]).T
    assert stored_rejections(fv, events, exact) == []
    assert stored_rejections(fv, events, kernel(events, function)) == []


def test_a_negative_fare_is_quarantined_naming_the_mean_it_would_break() -> None:
    fv = view("mean", t.FLOAT32, pb.ValidationRule(min_value=0))
    table = pa.table({"zone_id": [1, 2], "event_ts": [NOW.isoformat()] * 2, "fare": ["-5", "12.5"]})
    result = validate(fv, ENTITY, table, now=NOW)
    assert result.accepted.column("fare").to_pylist() == [12.5]
    assert result.rejected.column("reason").to_pylist() == [
        "fare: -5 below min 0 (the rule of feature 'fare_mean_10m', the mean of 'fare' over 10m); fare: -5"
        " below min 0 (the rule of feature 'fare_mean_30m', the mean of 'fare' over 30m)"
    ]


def test_categories_of_a_last_apply_to_each_event_and_a_counted_field_gets_no_rule() -> None:
    fv = view("last", t.INT64, pb.ValidationRule(allowed_values=[1, 2]))
    fv.spec.features.add(name="n", value_type=t.INT64, validation=pb.ValidationRule(min_value=0))
    fv.spec.aggregations.add(column="booking_id", function="count", window_seconds=600, output="n")
    table = pa.table(
        {
            "zone_id": [1, 1],
            "event_ts": [NOW.isoformat()] * 2,
            "fare": ["2", "3"],
            "booking_id": ["b1", "b2"],
        }
    )
    result = validate(fv, ENTITY, table, now=NOW)
    assert result.accepted.column("fare").to_pylist() == [2]
    assert (
        result.rejected.column("reason")
        .to_pylist()[0]
        .startswith(
            "fare: 3 not in allowed values [1, 2] (the rule of feature 'fare_last_10m', the last of 'fare'"
        )
    )


@pytest.mark.parametrize(
    ("function", "rule", "counterexample", "why"),
    [
        # Events each within the rule (each alone in its window passes it), whose one window is not.
        ("count", pb.ValidationRule(max_value=1), [1.0, 1.0], "a max_value on a count"),
        ("count", pb.ValidationRule(min_value=2), [1.0], "a min_value above 1 on a count"),
        ("count", pb.ValidationRule(allowed_values=[1]), [1.0, 1.0], "allowed_values on a count"),
        ("sum", pb.ValidationRule(max_value=10), [6.0, 6.0], "a max_value above 0 on a sum"),
        ("sum", pb.ValidationRule(min_value=-1), [-0.75, -0.75], "a min_value below 0 on a sum"),
        ("sum", pb.ValidationRule(allowed_values=[1]), [1.0, 1.0], "allowed_values on a sum"),
    ],
)
def test_a_rule_no_single_event_can_keep_is_refused_at_definition(
    function: str, rule: pb.ValidationRule, counterexample: list[float], why: str
) -> None:
    fv = view(function, t.INT64 if counterexample[0].is_integer() else t.FLOAT64, rule)
    events = [(0, i, i, v) for i, v in enumerate(counterexample)]
    fares = [written(v) for v in counterexample]
    table = pa.table({"zone_id": [0] * len(fares), "event_ts": [NOW.isoformat()] * len(fares), "fare": fares})
    assert validate(fv, ENTITY, table, now=NOW).rejected.num_rows == 0
    # ... yet the window of them breaks it, so the registry refuses the rule, naming feature and why.
    rows = np.array([reference(events, function, w) for w in WINDOWS_S]).T
    assert stored_rejections(fv, events, rows)
    with pytest.raises(InvalidArgument) as refused:
        validate_spec(fv.spec)
    assert refused.value.message.startswith(
        f"spec.features[0].validation: feature 'fare_{function}_10m' is the {function} of 'fare' over 10m:"
        f" {why}"
    )


def test_a_stored_view_with_a_rule_ingestion_cannot_keep_still_ingests_and_is_checked_as_stored() -> None:
    """A view registered before such rules were refused keeps working: its events pass (no event rule can
    keep the rule), and the retraining check still applies the rule to the stored aggregates."""
    fv = view("count", t.INT64, pb.ValidationRule(max_value=1))
    table = pa.table({"zone_id": [0, 0], "event_ts": [NOW.isoformat()] * 2, "fare": ["1", "1"]})
    assert validate(fv, ENTITY, table, now=NOW).accepted.num_rows == 2
    events = [(0, 0, 0, 1.0), (0, 1, 1, 1.0)]
    rows = np.array([reference(events, "count", w) for w in WINDOWS_S]).T
    assert stored_rejections(fv, events, rows) == [
        "fare_count_10m: 2 above max 1; fare_count_30m: 2 above max 1"
    ]
