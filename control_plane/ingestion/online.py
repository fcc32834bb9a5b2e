"""From validated rows to online-store writes: the registered layout of a view version, the latest row
per entity, and join-key values as the text the online key layout wants."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import redis

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.errors import FailedPrecondition
from clients.value_types import numpy_dtype_name
from control_plane.features.online_cleanup import deleted_view_fence
from control_plane.features.online_writer import OnlineViewVersion, expiry_ms
from kernels.online_keys import online_key
from kernels.packed_blob import FORMAT_VERSION, HEADER_SIZE, MAGIC, encode_rows


def online_view_version(view: pb.FeatureView) -> OnlineViewVersion:
    """The writer's description of a registered view version; the fingerprint is the registry's."""
    return OnlineViewVersion(
        name=view.spec.name,
        version=view.version,
        entity=view.spec.entity,
        columns=tuple((f.name, numpy_dtype_name(f.value_type)) for f in view.spec.features),
        fingerprint=view.schema_fingerprint,
        ttl_seconds=view.spec.ttl_seconds,
    )


def key_texts(table: pa.Table, key_names: Sequence[str]) -> list[tuple[str, ...]]:
    """Each row's join-key values as text (integers in canonical decimal), in key order."""
    columns = [table.column(name).cast(pa.string()).to_pylist() for name in key_names]
    return list(zip(*columns, strict=True)) if columns else []


def latest_per_entity(table: pa.Table, key_names: Sequence[str]) -> pa.Table:
    """One row per entity: the one with the greatest ``event_ts``, then (rows with an ``ingested_ts``)
    the latest ingestion, then the later row: the order the point-in-time join keeps rows by
    (``kernels/asof_kernels.keep_better``), so that online records of several ingestions written together
    (``online_pending`` records a replay completes) keep the row training sets return."""
    if table.num_rows == 0:
        return table
    order = pa.array(np.arange(table.num_rows))
    indexed = table.append_column("__order", order)
    ingested = [("ingested_ts", "ascending")] if "ingested_ts" in table.column_names else []
    sort_keys = [
        *((name, "ascending") for name in key_names),
        ("event_ts", "ascending"),
        *ingested,
        ("__order", "ascending"),
    ]
    ordered = indexed.take(pc.sort_indices(indexed, sort_keys=sort_keys))
    keys = key_texts(ordered, key_names)
    last = np.ones(ordered.num_rows, dtype=bool)
    last[:-1] = np.array([keys[i] != keys[i + 1] for i in range(len(keys) - 1)], dtype=bool)
    return ordered.filter(pa.array(last)).drop_columns(["__order"])


def feature_matrix(
    table: pa.Table, view: OnlineViewVersion
) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.bool_]]:
    """The values in the writer's layout and the null mask, [rows, features]."""
    n = table.num_rows
    nulls = np.zeros((n, len(view.columns)), dtype=bool)
    layout = view.layout
    shape = (n,) if layout.names else (n, len(view.columns))
    values: npt.NDArray[np.generic] = np.zeros(shape, dtype=layout)
    for j, (name, dtype) in enumerate(view.columns):
        column = table.column(name)
        nulls[:, j] = column.is_null().to_numpy(zero_copy_only=False)
        filled = pc.fill_null(column, pa.scalar(0).cast(column.type)).to_numpy(zero_copy_only=False)
        if layout.names:
            values[f"f{j}"] = np.asarray(filled, dtype=dtype)  # type: ignore[index]
        else:
            values[:, j] = np.asarray(filled, dtype=dtype)
    return values, nulls


#: Where a blob's header holds the schema fingerprint (8 bytes) and the event time (int64, little-endian;
#: see kernels/packed_blob.py).
_FINGERPRINT_OFFSET = 8
_EVENT_TS_OFFSET = 16
_WRITE_TS_OFFSET = 24  # the write time (int64 µs): a row's ingestion time, which breaks event-time ties

# Writes each blob unless its key holds one with a later event time, in one step inside Redis: a separate
# read and write would let two writers interleave (both read, the fresher writes, then the older one
# overwrites it). KEYS[1]: the view version's deletion fence (``features.online_cleanup``): while it exists
# the script writes nothing and returns -1, so no writer leaves a key behind the cleanup's scan of a deleted
# version; KEYS[2..]: the online keys; ARGV[1]: the PX expiry in ms ("" for none); ARGV[i]: the blob for
# KEYS[i]. Event times are read from the blobs' headers as a signed high and an unsigned low 32-bit
# word, which Lua's doubles hold exactly where the int64 would not. A tie of event times goes to the
# blob written for the later ingestion (the header's write time, which writers set to the row's
# ``ingested_ts``): the rule the point-in-time join breaks ties by (``kernels/asof_kernels.keep_better``),
# so a late replay of an older run's online part (or of a replayed record's online value, written with its
# stored row's ``ingested_ts``: ``online_completion``) no longer puts its value over a later run's that
# training sets return; a tie of both lets the new blob win. A value that is not a blob (too short, another
# magic or format version, not a string) is replaced, and so is a blob of another schema fingerprint whatever
# its event time: it is a leftover of another schema (say of a deleted view) that no reader can decode, so
# keeping it would block every write of the key and fail every read of it with DATA_LOSS for as long as it
# lives (for ever without a TTL).
# Returns how many were written. One call for many keys: a call per key cost Redis ~2.5x the time
# (each EVALSHA's own dispatch and argument conversion), which took the stream materializer below its
# target. Every online writer of ingestion runs it (batch runs and replays here, the stream
# materializer's commit), so the value with the newest event time stays whichever of them wrote it.
WRITE_IF_NOT_OLDER = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return -1
end
local px = ARGV[1]
local written = 0
for i = 2, #KEYS do
  local blob = ARGV[i]
  local keep = false
  local old = redis.pcall('GET', KEYS[i])
  if type(old) == 'string' and string.len(old) >= {header} and string.sub(old, 1, 3) == {prefix}
      and string.len(blob) >= {header}
      and string.sub(old, {fingerprint_first}, {fingerprint_last})
        == string.sub(blob, {fingerprint_first}, {fingerprint_last}) then
    local old_high = struct.unpack('<i4', old, {event_high})
    local new_high = struct.unpack('<i4', blob, {event_high})
    local old_low = struct.unpack('<I4', old, {event_low})
    local new_low = struct.unpack('<I4', blob, {event_low})
    if old_high ~= new_high then
      keep = old_high > new_high
    elseif old_low ~= new_low then
      keep = old_low > new_low
    else
      local old_written = struct.unpack('<i4', old, {write_high})
      local new_written = struct.unpack('<i4', blob, {write_high})
      if old_written ~= new_written then
        keep = old_written > new_written
      else
        keep = struct.unpack('<I4', old, {write_low}) > struct.unpack('<I4', blob, {write_low})
      end
    end
  end
  if not keep then
    if px == '' then
      redis.call('SET', KEYS[i], blob)
    else
      redis.call('SET', KEYS[i], blob, 'PX', px)
    end
    written = written + 1
  end
end
return written
""".format(
    header=HEADER_SIZE,
    prefix=f"'{MAGIC.decode('ascii')}\\{FORMAT_VERSION}'",  # the magic, then the format byte
    fingerprint_first=_FINGERPRINT_OFFSET + 1,  # Lua strings count from 1, and sub's end is inclusive
    fingerprint_last=_FINGERPRINT_OFFSET + 8,
    event_low=_EVENT_TS_OFFSET + 1,
    event_high=_EVENT_TS_OFFSET + 5,
    write_low=_WRITE_TS_OFFSET + 1,
    write_high=_WRITE_TS_OFFSET + 5,
)
#: Keys per call of ``WRITE_IF_NOT_OLDER``: a script blocks Redis while it runs, so a large write is
#: several calls (a thousand keys take Redis about a millisecond).
KEYS_PER_WRITE = 1000


def write_calls(
    pairs: Sequence[tuple[bytes, bytes]], px: int | None, fence: str
) -> list[tuple[list[bytes | str], list[Any]]]:
    """(keys, args) of the ``WRITE_IF_NOT_OLDER`` calls that write ``pairs`` of (key, blob), each call
    refused while ``fence`` (the version's ``deleted_view_fence``) exists."""
    expiry: Any = "" if px is None else px
    calls: list[tuple[list[bytes | str], list[Any]]] = []
    for start in range(0, len(pairs), KEYS_PER_WRITE):
        part = pairs[start : start + KEYS_PER_WRITE]
        calls.append(([fence, *(key for key, _ in part)], [expiry, *(blob for _, blob in part)]))
    return calls


def write_latest(client: redis.Redis, view: pb.FeatureView, key_names: Sequence[str], table: pa.Table) -> int:
    """Writes each entity's latest row unless the online store already holds a value of the same schema
    fingerprint with a later event time, or the same event time and a later ingestion (an older backfill
    never overwrites fresher values, even one written concurrently: each key's check and write are one
    script in Redis). A row's ``ingested_ts`` (as the offline store holds it) is its blob's write time;
    rows without that column are stamped now. Keys expire as ``OnlineWriter``'s do. Returns the rows
    written."""
    return write_blobs(client, view, latest_blobs(view, key_names, table))


def latest_blobs(
    view: pb.FeatureView, key_names: Sequence[str], table: pa.Table
) -> list[tuple[bytes, bytes]]:
    """(online key, blob) of each entity's latest row of ``table``, as ``write_latest`` writes them."""
    latest = latest_per_entity(table, key_names)
    if latest.num_rows == 0:
        return []
    online = online_view_version(view)
    event_us = latest.column("event_ts").cast(pa.int64()).to_numpy(zero_copy_only=False)
    values, nulls = feature_matrix(latest, online)
    written: npt.ArrayLike = time.time_ns() // 1000
    if "ingested_ts" in latest.column_names:
        written = latest.column("ingested_ts").cast(pa.int64()).to_numpy(zero_copy_only=False)
    blobs = encode_rows(values, online.layout, online.fingerprint, event_us, written, nulls)
    return [
        (online_key(online.entity, keys, online.name, online.version), blob)
        for keys, blob in zip(key_texts(latest, key_names), blobs, strict=True)
    ]


def write_blobs(client: redis.Redis, view: pb.FeatureView, pairs: Sequence[tuple[bytes, bytes]]) -> int:
    """Writes ``latest_blobs``' pairs (see ``write_latest``); returns how many were written."""
    if not pairs:
        return 0
    online = online_view_version(view)
    px = expiry_ms(online.ttl_seconds)
    script = client.register_script(WRITE_IF_NOT_OLDER)
    pipeline = client.pipeline(transaction=False)
    for keys, args in write_calls(pairs, px, deleted_view_fence(online.name, online.version)):
        script(keys=keys, args=args, client=pipeline)
    results = [int(written) for written in pipeline.execute()]
    if -1 in results:
        # Deleted while this run read its source: the rows before the delete are in the offline store
        # (kept, as every deleted version's are), and none of its online values outlives the cleanup.
        raise FailedPrecondition(
            f"feature view {online.name!r} version {online.version} was deleted while this run wrote it;"
            " its online values are being removed, so none were written"
        )
    return sum(results)


# Unlinks each key whose value is still exactly the blob given for it, in one step inside Redis, so a value
# another writer put over it since is kept. KEYS[i]: an online key; ARGV[i]: the blob written to it. A key
# of another type (GET fails) is left alone. Returns how many were removed.
REMOVE_IF_UNCHANGED = """
local removed = 0
for i = 1, #KEYS do
  local value = redis.pcall('GET', KEYS[i])
  if type(value) == 'string' and value == ARGV[i] then
    redis.call('UNLINK', KEYS[i])
    removed = removed + 1
  end
end
return removed
"""


def remove_unchanged(client: redis.Redis, pairs: Sequence[tuple[bytes, bytes]]) -> int:
    """Removes the (key, blob) pairs a writer wrote whose keys still hold its blob; returns how many."""
    script = client.register_script(REMOVE_IF_UNCHANGED)
    pipeline = client.pipeline(transaction=False)
    for start in range(0, len(pairs), KEYS_PER_WRITE):
        part = pairs[start : start + KEYS_PER_WRITE]
        script(keys=[key for key, _ in part], args=[blob for _, blob in part], client=pipeline)
    return sum(int(removed) for removed in pipeline.execute())
