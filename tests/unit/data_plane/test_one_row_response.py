"""The one-row answer written straight from the blobs (``data_plane.one_row``) against the general path as
the reference (``reader.assemble`` then ``wire.encode_response``): for any plan of 1–3 blocks (one type or
mixed, whole views or column subsets, with and without TTL) and any blobs (present, fresh or stale,
missing, with nulls, corrupt, of another schema), the bytes must be the same, or the shortcut must
decline exactly when some row needs the general path."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.aether.v1 import online_features_pb2
from clients.errors import DataLoss
from data_plane import wire
from data_plane.catalog import Catalog
from data_plane.one_row import one_row_response
from data_plane.plan import ReadPlan
from data_plane.reader import Fetched, assemble, one_row_parts
from kernels.packed_blob import encode
from tests.unit.data_plane.registry_builders import snapshot, view
from tests.unit.data_plane.test_block_assembly import NOW_US, blobs, view_reads


@st.composite
def plans(draw: st.DrawFn) -> ReadPlan:
    """1–3 views of 1–6 features each, every one read whole or as a column subset."""
    reads = [draw(view_reads(f"v{v}")) for v in range(draw(st.integers(1, 3)))]
    refs = tuple(ref for _, view_refs in reads for ref in view_refs)
    return Catalog(snapshot(*(fv for fv, _ in reads))).plan(refs)


def _encode(fetched: Fetched) -> bytes:
    result = assemble(fetched)
    return wire.encode_response(
        result.row_count,
        [(b.plan.wire_prefix, b.values, b.statuses, b.event_timestamps_us) for b in result.blocks],
    )


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_one_row_response_equals_the_general_path(data: st.DataObject) -> None:
    plan = data.draw(plans())
    row_blobs = [data.draw(blobs(block)) for block in plan.blocks]
    keys = [b"ae:{driver:1}" + block.key_suffix for block in plan.blocks]
    fetched = Fetched(plan, 1, keys, row_blobs, NOW_US)
    shortcut = one_row_response(fetched)
    needs_general = any(
        one_row_parts(block, blob, NOW_US) is None for block, blob in zip(plan.blocks, row_blobs, strict=True)
    )
    assert (shortcut is None) == needs_general
    try:
        reference = _encode(fetched)
    except DataLoss:
        assert shortcut is None  # a bad blob is named by the general path, never written out
        return
    if shortcut is not None:
        assert shortcut == reference
        parsed = online_features_pb2.GetOnlineFeaturesResponse.FromString(shortcut)
        assert parsed.row_count == 1 and len(parsed.blocks) == len(plan.blocks)


def test_many_rows_take_the_general_path() -> None:
    fv = view("v", [("a", "float32")])
    plan = Catalog(snapshot(fv)).plan(("v",))
    fetched = Fetched(plan, 2, [b"k1", b"k2"], [None, None], NOW_US)
    assert one_row_response(fetched) is None
    assert _encode(fetched).startswith(wire.varint(8) + wire.varint(2))  # row_count 2


def test_statuses_of_a_one_row_answer() -> None:
    """Not only equal to the reference: present, stale and missing rows say so on the wire."""
    fresh = view("fresh", [("a", "float32"), ("b", "float32")], ttl_seconds=3600)
    old = view("old", [("c", "int64")], ttl_seconds=3600)
    gone = view("gone", [("d", "float64")])
    plan = Catalog(snapshot(fresh, old, gone)).plan(("fresh", "old:c", "gone"))
    first, second = plan.blocks[0].view, plan.blocks[1].view
    fresh_blob = encode(np.array([1.5, 2.5], dtype="<f4"), first.layout, first.fingerprint, NOW_US, NOW_US)
    two_hours_ago = NOW_US - 2 * 3_600_000_000
    old_blob = encode(np.array([7], dtype="<i8"), second.layout, second.fingerprint, two_hours_ago, NOW_US)
    response = one_row_response(Fetched(plan, 1, [b"k"] * 3, [fresh_blob, old_blob, None], NOW_US))
    assert response is not None
    parsed = online_features_pb2.GetOnlineFeaturesResponse.FromString(response)
    assert [list(b.statuses) for b in parsed.blocks] == [
        [online_features_pb2.PRESENT] * 2,
        [online_features_pb2.STALE],
        [online_features_pb2.MISSING],
    ]
    assert np.frombuffer(parsed.blocks[0].values, dtype="<f4").tolist() == [1.5, 2.5]
    assert np.frombuffer(parsed.blocks[1].values, dtype="<i8").tolist() == [7]
    assert parsed.blocks[2].values == bytes(8)
    assert np.frombuffer(parsed.blocks[0].event_timestamps_us, dtype="<i8").tolist() == [NOW_US]
    assert parsed.blocks[2].event_timestamps_us == bytes(8)


def test_no_rows() -> None:
    plan = Catalog(snapshot(view("v", [("a", "float32")]))).plan(("v",))
    assert one_row_response(Fetched(plan, 0, [], [], NOW_US)) is None
