"""Catalog built from a registry snapshot: resolution of references into read plans, NOT_FOUND and
INVALID_ARGUMENT, Redis keys of entity rows, and the plan cache."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clients.aether.v1 import online_features_pb2 as pb
from clients.aether.v1 import types_pb2
from clients.errors import InvalidArgument, NotFound
from data_plane.catalog import Catalog
from data_plane.plan import CONTROL_PLANES_LIMIT, JoinKeyLimit
from kernels.online_keys import online_key
from tests.unit.data_plane.registry_builders import entity, floats, snapshot, view

MIXED = [("trips", "int64"), ("rating", "float32"), ("active", "bool"), ("score", "float64")]


@pytest.fixture
def catalog() -> Catalog:
    return Catalog(
        snapshot(
            view("stats", floats(4), version=1, status=types_pb2.DEPRECATED),
            view("stats", floats(6), version=2),
            view("stats", floats(8), version=3, status=types_pb2.RETIRED),
            view("mixed", MIXED),
            view("by_pair", floats(2), entity="pair"),
            view("orphan", floats(2), entity="nobody"),
            entities=[entity(), entity("pair", [("city", "string"), ("zone", "int64")])],
        )
    )


def test_views_carry_layout_fingerprint_and_latest_servable_version(catalog: Catalog) -> None:
    latest = catalog.view_version("stats")
    assert latest.version == 2  # v3 is retired, so not servable
    assert latest.layout == np.dtype("<f4") and len(latest.columns) == 6
    registered = {v.version: v.schema_fingerprint for v in catalog.snapshot.views if v.spec.name == "stats"}
    assert latest.fingerprint == registered[2]
    assert catalog.view_version("stats", 1).columns == ("f0", "f1", "f2", "f3")
    assert catalog.view_version("mixed").layout.names == ("f0", "f1", "f2", "f3")


def test_plan_resolves_whole_views_pins_and_subsets_in_first_reference_order(catalog: Catalog) -> None:
    plan = catalog.plan(["mixed:score", "stats", "stats@1:f3", "mixed:trips", "mixed:score"])
    assert [(b.view.name, b.view.version) for b in plan.blocks] == [("mixed", 1), ("stats", 2), ("stats", 1)]
    mixed, stats, pinned = plan.blocks
    assert mixed.column_positions.tolist() == [3, 0] and not mixed.whole_view
    assert mixed.out_dtype.names == ("f0", "f1")  # float64 + int64: a packed record
    assert stats.whole_view and stats.column_count == 6
    assert pinned.column_positions.tolist() == [3] and pinned.out_dtype == np.dtype("<f4")
    assert plan.feature_count == 2 + 6 + 1
    assert [e.name for e in plan.entities] == ["driver"]


def test_a_subset_of_one_type_from_a_mixed_view_is_a_plain_array(catalog: Catalog) -> None:
    (block,) = catalog.plan(["mixed:rating"]).blocks
    assert block.out_dtype == np.dtype("<f4")


def test_plans_are_cached_per_tuple_of_references(catalog: Catalog) -> None:
    assert catalog.plan(["stats:f1", "mixed"]) is catalog.plan(("stats:f1", "mixed"))
    assert catalog.plan(["mixed", "stats:f1"]) is not catalog.plan(["stats:f1", "mixed"])


@pytest.mark.parametrize(
    ("refs", "named"),
    [
        (["nope:f0"], "'nope'"),
        (["stats@3"], "no servable version 3"),
        (["stats@9:f0"], "no servable version 9"),
        (["stats:f7"], "'f7'"),
        (["orphan"], "entity 'nobody'"),
    ],
)
def test_unknown_names_are_not_found_naming_them(catalog: Catalog, refs: list[str], named: str) -> None:
    with pytest.raises(NotFound, match=named):
        catalog.plan(refs)


def test_malformed_reference_and_empty_request_are_invalid(catalog: Catalog) -> None:
    with pytest.raises(InvalidArgument, match="malformed"):
        catalog.plan(["stats@:f1"])
    with pytest.raises(InvalidArgument, match="no features"):
        catalog.plan([])


join_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)


@given(st.lists(st.tuples(join_text, st.integers(-(2**63), 2**63 - 1)), min_size=1, max_size=4))
def test_keys_are_the_online_key_layout_row_major(rows: list[tuple[str, int]]) -> None:
    catalog = Catalog(
        snapshot(
            view("by_pair", floats(2), entity="pair"),
            view("other", floats(1), entity="pair", version=4),
            entities=[entity("pair", [("city", "string"), ("zone", "int64")])],
        )
    )
    plan = catalog.plan(["by_pair", "other"])
    keys = plan.keys([{"city": city, "zone": str(zone)} for city, zone in rows])
    expected = [
        online_key("pair", [city, str(zone)], name, version)
        for city, zone in rows
        for name, version in (("by_pair", 1), ("other", 4))
    ]
    assert keys == expected


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("007", "7"),
        ("-0", "0"),
        ("-012", "-12"),
        ("42", "42"),
        ("0" * 5000 + "7", "7"),  # past int()'s 4,300 digits: was INTERNAL
        ("-" + "0" * 5000, "0"),
        ("-" + "0" * 30 + "9223372036854775808", "-9223372036854775808"),
        ("0" * 30 + "9223372036854775807", "9223372036854775807"),
    ],
)
def test_int64_join_keys_are_canonicalized(catalog: Catalog, text: str, canonical: str) -> None:
    (key,) = catalog.plan(["stats"]).keys([{"driver_id": text}])
    assert key == online_key("driver", [canonical], "stats", 2)


@pytest.mark.parametrize("bad", ["", "7.0", "1e3", " 7", "+7", "٣", "9223372036854775808", "0x10"])
def test_a_bad_int64_join_key_names_row_and_key(catalog: Catalog, bad: str) -> None:
    with pytest.raises(InvalidArgument, match=r"row 1: join key 'driver_id'"):
        catalog.plan(["stats"]).keys([{"driver_id": "1"}, {"driver_id": bad}])


@pytest.mark.parametrize(
    "big", ["9" * 5000, "-" + "9" * 5000, "1" + "0" * 19, "-" + "0" * 5000 + "9223372036854775809"]
)
def test_an_int64_join_key_of_too_many_digits_is_out_of_range(catalog: Catalog, big: str) -> None:
    # More than 4,300 digits made int() raise ValueError: INTERNAL instead of INVALID_ARGUMENT.
    with pytest.raises(InvalidArgument, match=r"row 1: join key 'driver_id' = .* is out of the int64 range"):
        catalog.plan(["stats"]).keys([{"driver_id": "1"}, {"driver_id": big}])


@pytest.mark.parametrize(
    ("city", "size"),
    [
        ("x" * 1024, None),
        ("é" * 512, None),
        ("😀" * 256, None),  # a quarter of the limit in characters: taken without counting its bytes
        ("😀" * 257, "1,028"),  # just past that quarter: counted, and over
        ("é" * 513, "1,026"),
        ("x" * 1025, "1,025"),
    ],
)
def test_a_string_join_key_is_held_to_the_limit_in_bytes_of_utf8(
    catalog: Catalog, city: str, size: str | None
) -> None:
    """Ingestion's limit (AETHER_MAX_JOIN_KEY_BYTES, 1,024 by default): a longer key names nothing stored."""
    plan = catalog.plan(["by_pair"])
    if size is None:
        assert plan.keys([{"city": city, "zone": "1"}]) == [online_key("pair", [city, "1"], "by_pair", 1)]
        return
    with pytest.raises(InvalidArgument, match=rf"row 0: join key 'city' = .* is {size} bytes of UTF-8"):
        plan.keys([{"city": city, "zone": "1"}])
    assert plan.keys([{"city": city, "zone": "1"}], JoinKeyLimit(2**20))  # the limit is the caller's


def test_the_catalog_holds_the_join_key_limit_its_snapshot_names() -> None:
    """The control plane's ingestion limit, sent with its snapshot; 0 (an older control plane) is none."""
    said = snapshot()
    assert Catalog(said).join_key_limit is None
    said.max_join_key_bytes = 4096
    assert Catalog(said).join_key_limit == JoinKeyLimit(4096, CONTROL_PLANES_LIMIT)


def test_a_row_without_a_needed_join_key_names_row_and_key(catalog: Catalog) -> None:
    plan = catalog.plan(["stats", "by_pair"])
    with pytest.raises(InvalidArgument, match=r"row 0 has no value for join key 'zone' of entity 'pair'"):
        plan.keys([{"driver_id": "1", "city": "x"}])


def test_the_plan_caches_hold_a_bounded_amount_whatever_the_size_of_the_plans() -> None:
    """The caches were bounded by count alone (1,024 plans each): a plan of 5,000 references costs about
    1.3 MB (its key, its columns' wire prefix and frames), so a client sending distinct long reference
    lists within the request limits (up to 10,000 features) grew a data plane by gigabytes (a plan of
    the wire path is kept by its bytes and by its references). Now what they hold is bounded by the
    references and columns of their plans, and a plan that repeats is still a hit."""
    names = [f"wide:a_feature_named_at_some_length_{i}" for i in range(5000)]
    catalog = Catalog(snapshot(view("wide", floats(5000, prefix="a_feature_named_at_some_length_"))))
    rng = np.random.default_rng(0)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(80):
            refs = [names[i] for i in rng.permutation(len(names))]
            wire = pb.GetOnlineFeaturesRequest(features=refs).SerializeToString()
            assert catalog.plan_for_wire(wire) is catalog.plan_for_wire(wire)
            del refs, wire
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 48 * 1024 * 1024, f"{held / 1e6:.0f} MB held by 80 plans of 5,000 references"
    assert catalog.plan(names[:3]) is catalog.plan(names[:3])
