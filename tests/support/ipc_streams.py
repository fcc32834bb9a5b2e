"""Arrow IPC streams that decode into far more than they weigh: what a caller could send to make a
server allocate memory (compressed zeros), or declare rows (a null-typed column) with no bytes behind them."""

from __future__ import annotations

import io

import pyarrow as pa


def compressed_zeros(total_bytes: int) -> bytes:
    """An Arrow IPC stream of 64-byte zero values decoding to just over ``total_bytes``, zstd-compressed
    to a few hundred KiB: wide values, so that it holds fewer rows than the servers' row bounds."""
    width, batch_rows = 64, 2 << 20  # 128 MiB a batch
    kind = pa.binary(width)
    schema = pa.schema([("zone", kind)])
    zeros = pa.Array.from_buffers(kind, batch_rows, [None, pa.py_buffer(bytes(width * batch_rows))])
    batch = pa.record_batch([zeros], schema=schema)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer:
        for _ in range(total_bytes // (batch_rows * width) + 1):
            writer.write_batch(batch)
    return sink.getvalue()


def plain(table: pa.Table) -> bytes:
    """``table`` as one uncompressed Arrow IPC stream."""
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()
