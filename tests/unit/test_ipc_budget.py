"""``clients.ipc_budget``: what an Arrow IPC stream declares it decodes into, read from its messages
before decoding, against what pyarrow's reader then holds; and a budget that refuses a stream over it
having decoded nothing."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.errors import ResourceExhausted
from clients.ipc_budget import ARRAY_OVERHEAD_BYTES, IpcBudget, declared_sizes

COMPRESSIONS = st.sampled_from([None, "lz4", "zstd"])


def stream(table: pa.Table, compression: str | None, batch_rows: int | None = None) -> bytes:
    sink = io.BytesIO()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        for batch in table.to_batches(max_chunksize=batch_rows):
            writer.write_batch(batch)
    return sink.getvalue()


def arrays(kind: pa.DataType) -> int:
    """How many arrays (IPC field nodes) a column of type ``kind`` is, its children counted."""
    return 1 + sum(arrays(kind.field(i).type) for i in range(kind.num_fields))


def held(batch: pa.RecordBatch) -> int:
    """What the decoded batch holds, counted as the budget counts it: its buffers and its arrays."""
    size = 0
    for column in batch.columns:
        size += sum(buffer.size for buffer in column.buffers() if buffer is not None)
        size += arrays(column.type) * ARRAY_OVERHEAD_BYTES
    return size


def column_of(kind: str, values: list[int | None]) -> pa.Array:
    if kind == "int64":
        return pa.array(values, pa.int64())
    if kind == "float":
        return pa.array([None if v is None else v / 3 for v in values], pa.float64())
    if kind == "string":
        return pa.array([None if v is None else "x" * (v % 50) for v in values], pa.string())
    if kind == "bool":
        return pa.array([None if v is None else v % 2 == 0 for v in values], pa.bool_())
    if kind == "list":
        return pa.array([None if v is None else list(range(v % 5)) for v in values], pa.list_(pa.int32()))
    if kind == "struct":
        return pa.array([None if v is None else {"a": v, "b": str(v)} for v in values])
    return pa.nulls(len(values))


TABLES = st.builds(
    lambda kinds, values: pa.table({f"c{i}": column_of(kind, values) for i, kind in enumerate(kinds)}),
    st.lists(st.sampled_from(["int64", "float", "string", "bool", "list", "struct", "null"]), max_size=5),
    st.lists(st.one_of(st.none(), st.integers(0, 10**6)), max_size=400),
)


@settings(max_examples=60, deadline=None)
@given(TABLES, COMPRESSIONS, st.integers(1, 500))
def test_what_a_stream_declares_is_what_the_reader_holds(
    table: pa.Table, compression: str | None, batch_rows: int
) -> None:
    data = stream(table, compression, batch_rows)
    declared = list(declared_sizes(pa.py_buffer(data)))
    batches = list(pa.ipc.open_stream(data))
    assert declared == [(batch.num_rows, held(batch)) for batch in batches]


@settings(max_examples=60, deadline=None)
@given(TABLES, COMPRESSIONS, st.integers(1, 500))
def test_a_stream_is_read_exactly_when_the_budget_holds_it(
    table: pa.Table, compression: str | None, batch_rows: int
) -> None:
    data = stream(table, compression, batch_rows)
    rows = sum(r for r, _ in declared_sizes(pa.py_buffer(data)))
    size = sum(s for _, s in declared_sizes(pa.py_buffer(data)))
    assert IpcBudget("rows", size, rows).read_stream(data).equals(table)
    if size:
        with pytest.raises(ResourceExhausted, match=f"rows exceed {size - 1} bytes once decompressed"):
            IpcBudget("rows", size - 1, rows).read_stream(data)
    if rows:
        with pytest.raises(ResourceExhausted, match=f"rows exceed {rows - 1} rows"):
            IpcBudget("rows", size, rows - 1).read_stream(data)


def test_a_compressed_bomb_is_refused_having_allocated_nothing() -> None:
    """64 MiB of zeros per batch compress to a few KiB: read_all() allocated it all, whatever it was."""
    zeros = pa.table({"zone": np.zeros(8 << 20, dtype=np.int64)})
    data = stream(zeros, "zstd")
    assert len(data) < 64 << 10
    pool = pa.proxy_memory_pool(pa.default_memory_pool())
    budget = IpcBudget("entity rows", 1 << 20, 1 << 30)
    with pytest.raises(ResourceExhausted, match="entity rows exceed 1048576 bytes once decompressed"):
        budget.read_stream(data, memory_pool=pool)
    assert pool.max_memory() == 0


def test_rows_with_no_bytes_behind_them_are_counted() -> None:
    """A null-typed column declares its rows with no buffer: a stream of a few hundred bytes said 2**40."""
    data = stream(pa.table({"n": pa.nulls(1 << 30)}), None)
    assert len(data) < 1024
    with pytest.raises(ResourceExhausted, match=r"entity rows exceed 1000000 rows \(at least 1073741824"):
        IpcBudget("entity rows", 1 << 30, 1_000_000).read_stream(data)


def test_one_budget_counts_every_stream_of_a_request() -> None:
    data = stream(pa.table({"x": list(range(100))}), "lz4")
    budget = IpcBudget("chunks", 1 << 30, 250)
    budget.read_stream(data)
    budget.read_stream(data)
    with pytest.raises(ResourceExhausted, match="chunks exceed 250 rows"):
        budget.read_stream(data)


def test_dictionaries_are_charged_as_bytes_not_rows() -> None:
    table = pa.table({"d": pa.array(["a", "b", "a", None] * 50).dictionary_encode()})
    data = stream(table, "zstd", 30)
    declared = list(declared_sizes(pa.py_buffer(data)))
    assert sum(rows for rows, _ in declared) == 200
    assert len(declared) == len(table.to_batches(max_chunksize=30)) + 1  # the dictionary's message
    assert IpcBudget("rows", 1 << 20, 200).read_stream(data).equals(table)
