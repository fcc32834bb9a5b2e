"""The one-entity shortcut of the read path (``reader._assemble_single_row``) against the general,
many-row path as the reference: for any view layout, column subset, TTL, age and blob (present, missing,
with nulls, corrupt), a block of one row must come out byte for byte as that row does in a block of two."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.aether.v1 import feature_registry_pb2 as fr
from clients.errors import DataLoss
from data_plane.catalog import Catalog
from data_plane.plan import BlockPlan
from data_plane.reader import BlockResult, assemble_block
from kernels.packed_blob import encode, layout_dtype
from tests.unit.data_plane.registry_builders import snapshot, view

NOW_US = 1_700_000_000_000_000
HOUR_US = 3_600_000_000
DTYPES = ("float32", "float64", "int64", "int32", "bool")


@st.composite
def view_reads(draw: st.DrawFn, name: str = "v") -> tuple[fr.FeatureView, list[str]]:
    """A view ``name`` of 1–6 features (one type or mixed, with or without a TTL) and the references that
    read it: the whole view, or a column subset."""
    count = draw(st.integers(1, 6))
    if draw(st.booleans()):
        dtypes = [draw(st.sampled_from(DTYPES))] * count
    else:
        dtypes = draw(st.lists(st.sampled_from(DTYPES), min_size=count, max_size=count))
    ttl = draw(st.sampled_from([0, 3600]))
    fv = view(name, [(f"f{i}", t) for i, t in enumerate(dtypes)], ttl_seconds=ttl)
    if draw(st.booleans()):
        return fv, [name]
    positions = draw(st.lists(st.integers(0, count - 1), min_size=1, max_size=count, unique=True))
    return fv, [f"{name}:f{p}" for p in positions]


@st.composite
def blocks(draw: st.DrawFn) -> BlockPlan:
    """A compiled block of one view read whole or as a column subset (:func:`view_reads`)."""
    fv, refs = draw(view_reads())
    return Catalog(snapshot(fv)).plan(tuple(refs)).blocks[0]


@st.composite
def blobs(draw: st.DrawFn, block: BlockPlan) -> bytes | None:
    kind = draw(st.sampled_from(["present", "missing", "nulls", "corrupt", "foreign"]))
    if kind == "missing":
        return None
    layout = block.view.layout
    if kind == "corrupt":
        return draw(st.binary(max_size=block.view.blob.size + 8))
    names = layout.names
    n = len(names) if names is not None else len(block.view.dtype_names)
    if names is None:
        values: object = np.arange(1, n + 1).astype(layout)
    else:
        values = tuple(np.array([i + 1]).astype(layout[name])[0] for i, name in enumerate(names))
    age_us = draw(st.sampled_from([0, 2 * HOUR_US]))
    nulls = None
    if kind == "nulls":
        nulls = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    fingerprint = block.view.fingerprint ^ (1 if kind == "foreign" else 0)
    return encode(values, layout, fingerprint, NOW_US - age_us, NOW_US, nulls=nulls)


def _first_row(result: BlockResult, block: BlockPlan) -> tuple[bytes, bytes, bytes, bool]:
    out = block.out_dtype
    row_bytes = out.itemsize if out.names is not None else block.column_count * out.itemsize
    columns = block.column_count
    return (
        result.values[:row_bytes],
        result.statuses[:columns],
        result.event_timestamps_us[:8],
        0 in result.absent_rows,
    )


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_one_row_equals_that_row_of_the_general_path(data: st.DataObject) -> None:
    block = data.draw(blocks())
    blob = data.draw(blobs(block))
    other = encode(
        np.zeros(1, dtype=block.view.layout)[0]
        if block.view.layout.names
        else np.zeros(len(block.view.dtype_names)),
        block.view.layout,
        block.view.fingerprint,
        NOW_US,
        NOW_US,
    )
    keys = [b"ae:{driver:1}:v:v1", b"ae:{driver:2}:v:v1"]
    try:
        reference = _first_row(assemble_block(block, [blob, other], keys, NOW_US), block)
    except DataLoss as exc:
        with pytest.raises(DataLoss) as raised:
            assemble_block(block, [blob], keys[:1], NOW_US)
        assert str(raised.value) == str(exc)
        return
    single = assemble_block(block, [blob], keys[:1], NOW_US)
    assert _first_row(single, block) == reference
    assert single.plan is block


def test_mixed_layout_is_exercised() -> None:
    """The strategy above must reach record layouts (``layout.names``), or the shortcut's record branch
    would go untested: a mixed view's whole read returns one packed record per row."""
    fv = view("v", [("a", "int64"), ("b", "float32")])
    block = Catalog(snapshot(fv)).plan(("v",)).blocks[0]
    assert block.view.layout.names is not None
    assert block.out_dtype == layout_dtype(["int64", "float32"])
    missing = assemble_block(block, [None], [b"k"], NOW_US)
    assert missing.values == bytes(12)
