"""Writing one data file of the offline store (split from ``store``): whole or not at all, under a
time-ordered name, encoded for the point-in-time join.

On a local filesystem a file is written under a hidden temporary name (a leading ``.``), flushed to disk
and renamed into place, so a writer that dies mid-write leaves only a hidden fragment that readers never
list; the folder (and its parent, for a partition just made) is fsynced after the rename. On an object
store, whose pyarrow output stream completes an upload on close even after the writing raised, a file is
written whole locally, uploaded under a hidden name, read back and copied to its name
(:mod:`control_plane.offline.uploads`).

File names are time-ordered UUIDs (the UUIDv7 layout: milliseconds first, :func:`time_ordered_uuid`), so
listing a partition in name order lists files in write order.

Encoding (:func:`parquet_write_options`) is chosen for the point-in-time join, which decodes every
value of every feature column it asks for. Floating-point and timestamp columns, whose values rarely
repeat, are stored plain: a dictionary would only add a lookup per value (and one of a few thousand
distinct floats is kept, making the file larger), and a general-purpose codec finds little to remove
while costing decode time: plain pages decode about 1.6x as fast as dictionary-and-Snappy ones. Other
columns (join keys, integers, strings, booleans) keep a dictionary and Snappy, which shrink them well.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from clients.files import fsync_folder
from control_plane.offline.store_layout import PARQUET_SUFFIX, TEMP_PREFIX
from control_plane.offline.uploads import publish_whole


def write_whole_file(
    filesystem: pafs.FileSystem, partition: str, rows: pa.Table, name: str, *, rename_into_place: bool
) -> str:
    """Writes ``rows`` as the data file ``name`` of ``partition``, whole or not at all (module doc);
    returns its path."""
    final = f"{partition}/{name}{PARQUET_SUFFIX}"
    options = parquet_write_options(rows.schema)
    if not rename_into_place:
        # Written to its final key, a write that failed part-way was published part-way by pyarrow's
        # closing stream: hidden by its open intent until the recovery removed it, but read by every
        # listing of the partition (and failing it) where no intent named it any more (a writer that
        # lost its lease, a write without ``announce``).
        staged = f"{partition}/{TEMP_PREFIX}{uuid.uuid4().hex}.tmp"
        publish_whole(filesystem, final, staged, lambda sink: pq.write_table(rows, sink, **options))
        return final
    temp = f"{partition}/{TEMP_PREFIX}{uuid.uuid4().hex}.tmp"
    try:
        # Flushed to disk before the rename: otherwise a power cut could publish an empty name.
        with open(temp, "wb") as sink:
            pq.write_table(rows, sink, **options)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temp, final)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    # The new name, and a partition folder made for it, are durable before the caller counts the rows in
    # SQL: else a power cut could lose the rename (or the folder) of rows the metadata says are written.
    fsync_folder(Path(partition))
    fsync_folder(Path(partition).parent)
    return final


def parquet_write_options(schema: pa.Schema) -> dict[str, Any]:
    """Keyword arguments of ``pyarrow.parquet.write_table`` for a table of ``schema`` (module doc)."""
    plain = {
        field.name
        for field in schema
        if pa.types.is_floating(field.type) or pa.types.is_timestamp(field.type)
    }
    return {
        "use_dictionary": [name for name in schema.names if name not in plain],
        "compression": {name: "none" if name in plain else "snappy" for name in schema.names},
    }


_SEQUENCE_MAX = 0xFFF
# The last name's millisecond and sequence: each name of this process sorts after the one before.
_last_millis = -1
_last_sequence = _SEQUENCE_MAX
_sequence_lock = threading.Lock()


def time_ordered_uuid() -> str:
    """A UUIDv7-style name: 48 bits of milliseconds, then a 12-bit sequence and random bits, so names
    sort in write order. Within one process every name sorts after the one before: the sequence counts
    the names of one millisecond, and past its 4,096th (or when the clock steps back) the name takes the
    next millisecond after the last one given. A process-wide counter wrapped around instead, every
    4,096 names, and the name given then sorted before the one just given within the same millisecond."""
    global _last_millis, _last_sequence
    with _sequence_lock:
        millis = max(time.time_ns() // 1_000_000, _last_millis)
        if millis == _last_millis:
            if _last_sequence == _SEQUENCE_MAX:
                millis, sequence = millis + 1, 0
            else:
                sequence = _last_sequence + 1
        else:
            sequence = 0
        _last_millis, _last_sequence = millis, sequence
    value = (millis & ((1 << 48) - 1)) << 80 | 0x7 << 76 | sequence << 64 | 0b10 << 62
    value |= secrets.randbits(62)
    return str(uuid.UUID(int=value))
