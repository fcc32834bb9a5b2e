"""Traffic splits: validation, and the operations keep live shares at 100 % with the other variants'
proportions unchanged (what the router's monotonicity rests on)."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.errors import FailedPrecondition, InvalidArgument, NotFound
from clients.serving_rules import MIN_TRAFFIC_PERCENT, ROUTING_BUCKETS
from control_plane.deployments.traffic import (
    Role,
    VariantRecord,
    add_variant,
    promote,
    remove_variant,
    set_traffic,
    validate,
)
from kernels.hashing import BUCKETS, UNASSIGNED, assign_buckets


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
    percent = data.draw(st.one_of(st.just(0.0), st.floats(MIN_TRAFFIC_PERCENT, 99.0)))
    others_total = sum(x.traffic_percent for i, x in enumerate(variants) if i != target)
    squeezed = [  # rescaled under one routing bucket (beyond rounding), where it would get no requests
        x.name
        for i, x in enumerate(variants)
        if i != target
        and x.traffic_percent * (100.0 - percent) / others_total < MIN_TRAFFIC_PERCENT * (1 - 1e-9)
    ]
    if squeezed:
        with pytest.raises(
            InvalidArgument, match=f"would leave variant '{squeezed[0]}' with .* below the minimum"
        ):
            set_traffic(variants, f"v{target}", percent, "d")
        return
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


def _table(variants: list[VariantRecord], buckets: int) -> list[str]:
    live = [x for x in variants if x.live]
    table = assign_buckets("d", [x.name for x in live], [x.traffic_percent for x in live], buckets)
    return [live[i].name if i != UNASSIGNED else "" for i in table]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.one_of(st.just(0.0), st.floats(1.0, 100.0)), min_size=1, max_size=4),
    st.floats(1.0, 100.0),
    st.integers(1, 4),
    st.data(),
)
def test_promote_moves_nobody_between_the_variants_that_remain(
    canaries: list[float], primary: float, shadow: int, data: st.DataObject
) -> None:
    """Against a brute-force reference, bucket by bucket: the promoted variant serves every bucket the
    old primary or it served, and every other variant keeps exactly its buckets; when that cannot be
    done (another canary holds traffic), promotion is refused."""
    weights = [primary, *canaries]
    total = sum(weights)
    variants = [
        v(f"v{i}", Role.PRIMARY if i == 0 else Role.CANARY, w * 100 / total) for i, w in enumerate(weights)
    ]
    variants.append(v(f"s{shadow}", Role.SHADOW, 30.0))
    target = f"v{data.draw(st.integers(1, len(canaries)))}"
    others_hold = any(x.traffic_percent > 0.0 for x in variants[1:-1] if x.name != target)
    try:
        after = promote(variants, target, "d")
    except FailedPrecondition as exc:
        assert others_hold, exc
        assert "other canaries hold traffic" in str(exc)
        return
    assert math.isclose(live_total(after), 100.0)
    before_table, after_table = _table(variants, 2_000), _table(after, 2_000)
    for bucket, (was, now) in enumerate(zip(before_table, after_table, strict=True)):
        expected = target if was in ("v0", target) else was
        assert now == expected, (bucket, was, now)


def test_promote_is_refused_while_another_canary_holds_traffic() -> None:
    """The reviewer's case: primary 60, canaries a and green 20 each; promoting green took 762 of a's
    buckets."""
    variants = [v("blue", Role.PRIMARY, 60.0), v("a", Role.CANARY, 20.0, 2), v("green", Role.CANARY, 20.0, 3)]
    with pytest.raises(FailedPrecondition, match=r"other canaries hold traffic \('a'\).*roll them back"):
        promote(variants, "green", "d")
    emptied = set_traffic(variants, "a", 0.0, "d")
    promoted = promote(emptied, "green", "d")
    assert [(x.name, x.role, x.traffic_percent) for x in promoted] == [
        ("a", Role.CANARY, 0.0),
        ("green", Role.PRIMARY, 100.0),
    ]


def test_the_minimum_share_is_one_of_the_routers_buckets() -> None:
    # clients cannot import kernels: the count is written twice, and must stay one.
    assert ROUTING_BUCKETS == BUCKETS and MIN_TRAFFIC_PERCENT == 100.0 / BUCKETS
