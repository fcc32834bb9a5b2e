"""Traffic splits: validation, and the operations keep live shares at 100 % with the other variants'
proportions unchanged (what the router's monotonicity rests on)."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.errors import FailedPrecondition, InvalidArgument, NotFound
from control_plane.deployments.traffic import (
    Role,
    VariantRecord,
    add_variant,
    promote,
    remove_variant,
    set_traffic,
    validate,
)


def v(name: str, role: Role, percent: float, version: int = 1) -> VariantRecord:
    return VariantRecord(name, "eta", version, role, percent)


def live_total(variants: list[VariantRecord]) -> float:
    return sum(x.traffic_percent for x in variants if x.live)


def test_validate_fills_a_lone_primary_and_rescales_small_rounding() -> None:
    assert validate([v("a", Role.PRIMARY, 0.0)], "d")[0].traffic_percent == 100.0
    out = validate([v("a", Role.PRIMARY, 66.667), v("b", Role.CANARY, 33.333), v("s", Role.SHADOW, 10)], "d")
    assert math.isclose(live_total(out), 100.0) and out[2].traffic_percent == 10


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ([], "at least one"),
        ([v("a", Role.CANARY, 100.0)], "exactly one primary"),
        ([v("a", Role.PRIMARY, 50.0), v("b", Role.PRIMARY, 50.0)], "exactly one primary"),
        ([v("a", Role.PRIMARY, 60.0), v("a", Role.CANARY, 40.0)], "repeats"),
        ([v("a", Role.PRIMARY, 90.0), v("b", Role.CANARY, 20.0)], "sums to 110%"),
        ([v("a", Role.PRIMARY, 100.0), v("s", Role.SHADOW, 120.0)], "within"),
        ([v("bad name", Role.PRIMARY, 100.0)], "not valid"),
    ],
)
def test_validate_refuses(variants: list[VariantRecord], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        validate(variants, "d")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(1.0, 100.0), min_size=2, max_size=5), st.data())
def test_set_traffic_keeps_the_others_proportions(weights: list[float], data: st.DataObject) -> None:
    total = sum(weights)
    variants = [
        v(f"v{i}", Role.PRIMARY if i == 0 else Role.CANARY, w * 100 / total) for i, w in enumerate(weights)
    ]
    target = data.draw(st.integers(0, len(variants) - 1))
    percent = data.draw(st.floats(0.0, 99.0))
    out = set_traffic(variants, f"v{target}", percent, "d")
    assert math.isclose(live_total(out), 100.0)
    assert math.isclose(out[target].traffic_percent, percent)
    others = [i for i in range(len(variants)) if i != target]
    for i, j in itertools.pairwise(others):
        assert math.isclose(
            out[i].traffic_percent * variants[j].traffic_percent,
            out[j].traffic_percent * variants[i].traffic_percent,
            rel_tol=1e-9,
        )


def test_add_remove_and_promote() -> None:
    start = [v("blue", Role.PRIMARY, 100.0), v("dark", Role.SHADOW, 50.0, 3)]
    added = add_variant(start, v("green", Role.CANARY, 5.0, 2), "d")
    assert [(x.name, x.traffic_percent) for x in added] == [("blue", 95.0), ("dark", 50.0), ("green", 5.0)]
    assert remove_variant(added, "green", "d")[0].traffic_percent == 100.0
    swapped = promote(added, "green", "d")
    assert [(x.name, x.role, x.traffic_percent) for x in swapped] == [
        ("dark", Role.SHADOW, 50.0),
        ("green", Role.PRIMARY, 100.0),
    ]
    with pytest.raises(FailedPrecondition, match="primary"):
        remove_variant(added, "blue", "d")
    with pytest.raises(FailedPrecondition, match="not a canary"):
        promote(added, "dark", "d")
    with pytest.raises(NotFound, match="no variant 'nope'"):
        set_traffic(added, "nope", 10.0, "d")
    with pytest.raises(FailedPrecondition, match="only live variant"):
        set_traffic(start, "blue", 50.0, "d")
