"""Reading a caller's Arrow IPC streams within a budget of decoded bytes and rows.

An IPC stream's buffers may be compressed (LZ4 or zstd), and a few KiB of zstd decompress to GiB: the
servers read whatever a caller sent with ``read_all()``, so one small ``GetHistoricalFeatures`` made the
control plane allocate 1 GiB, and a bigger one any amount. A budget charges every message of a stream
*before* Arrow decodes any of it, from what the message declares:

* the bytes its buffers take once decoded: with compression each buffer body starts with its
  uncompressed length (an int64; ``-1`` for a buffer stored as is), which is exactly what Arrow
  allocates and then checks the decompressed size against; without, the buffer's own length;
* :data:`ARRAY_OVERHEAD_BYTES` per array (every column of a batch, nested ones counted): the decoder's
  bookkeeping, which a stream of many empty columns or batches is made of;
* the rows of each record batch (a null-typed or run-end-encoded column can declare any number of rows
  with no bytes behind them, and later steps allocate per row).

The declarations are read from the message's metadata, the IPC format's flatbuffer (``Message.fbs``:
Message -> RecordBatch or DictionaryBatch -> nodes, buffers, compression), which Arrow has verified
when it read the message. A stream over the budget is refused (RESOURCE_EXHAUSTED naming the limit)
having decoded nothing, so a request can make the server allocate at most its limits.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

import pyarrow as pa

from clients.errors import ResourceExhausted

#: Charged per array of every batch on top of its buffers (see the module's docstring): about what
#: Arrow keeps per decoded array (its ArrayData, Buffer objects and their shared pointers).
ARRAY_OVERHEAD_BYTES = 256

# Message.fbs: the header union's types and the fields' slots in their tables.
_RECORD_BATCH, _DICTIONARY_BATCH = 3, 2
_MESSAGE_HEADER_TYPE, _MESSAGE_HEADER = 1, 2
_BATCH_LENGTH, _BATCH_NODES, _BATCH_BUFFERS, _BATCH_COMPRESSION = 0, 1, 2, 3
_DICTIONARY_DATA = 1
_STRUCT_SIZE = 16  # FieldNode (length, null_count) and Buffer (offset, length): two int64 each
_PREFIX = 8  # a compressed buffer's uncompressed length, before its compressed bytes
_UNCOMPRESSED = -1


class IpcBudget:
    """What the Arrow IPC streams of one request may decode into, all of them together: ``max_bytes``
    decoded bytes and ``max_rows`` rows. ``what`` names the data in a refusal (``"entity rows"``)."""

    def __init__(self, what: str, max_bytes: int, max_rows: int) -> None:
        self.what = what
        self.max_bytes = max_bytes
        self.max_rows = max_rows
        self.bytes = 0
        self.rows = 0

    def read_stream(self, data: bytes | pa.Buffer, memory_pool: pa.MemoryPool | None = None) -> pa.Table:
        """The table of one IPC stream, charged to the budget before any of it is decoded: raises
        ResourceExhausted when it would go over, and what pyarrow raises for a stream that is not one
        (``pa.ArrowInvalid``, ``OSError``; the caller says where it came from)."""
        buffer = data if isinstance(data, pa.Buffer) else pa.py_buffer(data)
        for rows, size in declared_sizes(buffer):
            self._charge(rows, size)
        reader = pa.ipc.open_stream(buffer, memory_pool=memory_pool)
        batches = []
        while True:
            try:
                batches.append(reader.read_next_batch())
            except StopIteration:
                break
        return pa.Table.from_batches(batches, schema=reader.schema)

    def _charge(self, rows: int, size: int) -> None:
        self.rows += rows
        self.bytes += size
        if self.rows > self.max_rows:
            raise ResourceExhausted(
                f"{self.what} exceed {self.max_rows} rows (at least {self.rows} sent): send fewer per call"
            )
        if self.bytes > self.max_bytes:
            raise ResourceExhausted(
                f"{self.what} exceed {self.max_bytes} bytes once decompressed (at least {self.bytes} sent,"
                " counting what Arrow keeps per column): send fewer per call"
            )


def declared_sizes(stream: pa.Buffer) -> Iterator[tuple[int, int]]:
    """``(rows, decoded bytes)`` that each record batch and dictionary of the IPC ``stream`` declares,
    read from the messages without decoding them (a dictionary's rows count as 0: they are values the
    batches refer to, not rows). Raises ``pa.ArrowInvalid`` or ``OSError`` for a stream that is not
    one."""
    reader = pa.ipc.MessageReader.open_stream(stream)
    while True:
        try:
            message = reader.read_next_message()
        except StopIteration:
            return
        try:
            declared = _declared(message.metadata.to_pybytes(), message.body)
        except (struct.error, IndexError):
            # Arrow verified the flatbuffer; one we still cannot walk is refused, never guessed at.
            raise pa.ArrowInvalid("an IPC message's metadata is malformed") from None
        if declared is not None:
            yield declared


def _declared(metadata: bytes, body: pa.Buffer | None) -> tuple[int, int] | None:
    message = _table(metadata, _root(metadata))
    kind_at = message(_MESSAGE_HEADER_TYPE)
    header_at = message(_MESSAGE_HEADER)
    if kind_at is None or header_at is None:
        return None
    kind = metadata[kind_at]
    if kind == _DICTIONARY_BATCH:
        data_at = _table(metadata, _deref(metadata, header_at))(_DICTIONARY_DATA)
        if data_at is None:
            return None
        _, size = _batch(metadata, _deref(metadata, data_at), body)
        return 0, size
    if kind == _RECORD_BATCH:
        return _batch(metadata, _deref(metadata, header_at), body)
    return None  # the schema: no buffers


def _batch(metadata: bytes, at: int, body: pa.Buffer | None) -> tuple[int, int]:
    batch = _table(metadata, at)
    length_at = batch(_BATCH_LENGTH)
    rows = struct.unpack_from("<q", metadata, length_at)[0] if length_at is not None else 0
    nodes = _vector_length(metadata, batch(_BATCH_NODES))
    compressed = batch(_BATCH_COMPRESSION) is not None
    size = nodes * ARRAY_OVERHEAD_BYTES
    buffers_at = batch(_BATCH_BUFFERS)
    if buffers_at is not None:
        vector = _deref(metadata, buffers_at)
        for index in range(int(struct.unpack_from("<I", metadata, vector)[0])):
            offset, length = struct.unpack_from("<qq", metadata, vector + 4 + index * _STRUCT_SIZE)
            size += _decoded_length(offset, length, body) if compressed else length
    if rows < 0 or size < 0:
        raise struct.error("a negative length")
    return rows, size


def _decoded_length(offset: int, length: int, body: pa.Buffer | None) -> int:
    """What a buffer of a compressed batch takes once decoded, as Arrow's reader computes it."""
    if length < _PREFIX:
        # Empty (no buffer), or too short to hold the prefix, which Arrow refuses.
        return 0
    if body is None or offset < 0 or offset + _PREFIX > body.size:
        raise struct.error("a buffer outside the message body")
    prefix = struct.unpack_from("<q", body.slice(offset, _PREFIX).to_pybytes())[0]
    if prefix == _UNCOMPRESSED:
        return length - _PREFIX
    if prefix < 0:
        raise struct.error("a negative uncompressed length")
    return int(prefix)


# Flatbuffers, the little of them the IPC metadata needs: a table starts with the offset back to its
# vtable, which holds one uint16 offset per field (0: absent); an offset field holds a uint32 offset
# forward to the table or vector; a vector starts with its uint32 length.


def _root(buffer: bytes) -> int:
    return int(struct.unpack_from("<I", buffer, 0)[0])


def _deref(buffer: bytes, at: int) -> int:
    return at + int(struct.unpack_from("<I", buffer, at)[0])


def _table(buffer: bytes, at: int) -> Callable[[int], int | None]:
    """The position of each field of the table at ``at`` (None when absent), by slot."""
    vtable = at - int(struct.unpack_from("<i", buffer, at)[0])
    vtable_size = int(struct.unpack_from("<H", buffer, vtable)[0])

    def field(slot: int) -> int | None:
        entry = 4 + 2 * slot
        if entry + 2 > vtable_size:
            return None
        offset = int(struct.unpack_from("<H", buffer, vtable + entry)[0])
        return at + offset if offset else None

    return field


def _vector_length(buffer: bytes, field_at: int | None) -> int:
    return 0 if field_at is None else int(struct.unpack_from("<I", buffer, _deref(buffer, field_at))[0])
