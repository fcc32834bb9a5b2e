"""Atomic, idempotent commit of one processed read batch to Redis, and the outbox that carries its
offline rows and quarantine records to the offline store and SQL.

One Lua script (atomic in Redis) per batch: checks that this materializer still owns the view (a newer
one fences it out) and that none of the batch's message ids was applied before; then adds the ids to the
applied / rejected sets, writes the online blobs, stores the batch's receipt (offline history rows and
rejected records as Arrow IPC) on the outbox list, and acknowledges the messages. Either all of it
happens or none, so a SIGKILL at any point leaves either an unapplied batch (redelivered, reclaimed) or
an applied one with its receipt waiting in the outbox.

``drain`` moves receipts on: offline write, then one SQL transaction (quarantine rows, run counters, the
receipt id), then removes the receipt. A receipt whose id SQL already holds is only removed, so a
crash between the SQL commit and the removal double-counts nothing. A crash between the offline write
and the SQL commit writes that receipt's rows a second time, as exact duplicates (same keys, event and
ingestion times, values), which readers treat as one row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import redis
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db import write_session
from control_plane.ingestion.quarantine import RunSource, now_us, record_outcome
from control_plane.ingestion.tables import IngestionReceiptRow
from control_plane.offline.store import OfflineStore

ALREADY_COMMITTED, COMMITTED, FENCED, DUPLICATE = 1, 0, -1, -2

_COMMIT = """
local owner, token = KEYS[1], ARGV[1]
local applied, rejected, outbox, receipt, stream = KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
if redis.call('GET', owner) ~= token then return -1 end
if redis.call('EXISTS', receipt) == 1 then return 1 end
local group, px = ARGV[2], tonumber(ARGV[3])
local n_applied, n_rejected, n_blobs = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local CHUNK = 500
-- Message ids sit at ARGV[first], ARGV[first + 2], ... (each followed by its score). Commands take them
-- CHUNK at a time: one call per chunk rather than per message, within Lua's unpack limit.
local function any_seen(key, first, count)
  for i = 0, count - 1, CHUNK do
    local ids = {}
    for j = i, math.min(i + CHUNK, count) - 1 do ids[#ids + 1] = ARGV[first + j * 2] end
    for _, score in ipairs(redis.call('ZMSCORE', key, unpack(ids))) do
      if score then return true end
    end
  end
  return false
end
local ids_at, n_ids = 7, n_applied + n_rejected
if any_seen(applied, ids_at, n_ids) or any_seen(rejected, ids_at, n_ids) then return -2 end
local function zadd(key, first, count)
  for i = 0, count - 1, CHUNK do
    local args = {}
    for j = i, math.min(i + CHUNK, count) - 1 do
      local at = first + j * 2
      args[#args + 1] = ARGV[at + 1]; args[#args + 1] = ARGV[at]
    end
    redis.call('ZADD', key, unpack(args))
  end
end
zadd(applied, ids_at, n_applied)
zadd(rejected, ids_at + 2 * n_applied, n_rejected)
local i = ids_at + 2 * n_ids
for j = 0, n_blobs - 1 do
  if px > 0 then redis.call('SET', ARGV[i], ARGV[i + 1], 'PX', px)
  else redis.call('SET', ARGV[i], ARGV[i + 1]) end
  i = i + 2
end
redis.call('HSET', receipt, 'history', ARGV[i], 'rejected', ARGV[i + 1], 'accepted', ARGV[i + 2])
redis.call('RPUSH', outbox, receipt)
local acks = {}
for j = i + 3, #ARGV do
  acks[#acks + 1] = ARGV[j]
  if #acks == CHUNK then redis.call('XACK', stream, group, unpack(acks)); acks = {} end
end
if #acks > 0 then redis.call('XACK', stream, group, unpack(acks)) end
return 0
"""


@dataclass(frozen=True)
class StateKeys:
    """Redis keys of one materializer (view version x consumer group)."""

    prefix: str

    @classmethod
    def of(cls, view: str, version: int, group: str) -> StateKeys:
        return cls(f"aether:materializer:{view}:v{version}:{group}")

    @property
    def owner(self) -> str:
        return self.prefix + ":owner"

    @property
    def applied(self) -> str:
        return self.prefix + ":applied"

    @property
    def rejected(self) -> str:
        return self.prefix + ":rejected"

    @property
    def outbox(self) -> str:
        return self.prefix + ":outbox"

    def receipt(self, receipt_id: str) -> str:
        return f"{self.prefix}:receipt:{receipt_id}"


def ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def ipc_table(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


class Committer:
    def __init__(self, client: redis.Redis, keys: StateKeys, stream: str, group: str, token: str) -> None:
        self._client = client
        self._keys = keys
        self._stream = stream
        self._group = group
        self._token = token
        self._script = client.register_script(_COMMIT)

    def commit(
        self,
        receipt_id: str,
        applied: Sequence[tuple[str, int]],
        rejected: Sequence[tuple[str, int]],
        blobs: Sequence[tuple[bytes, bytes]],
        px: int | None,
        history: pa.Table,
        rejected_records: pa.Table,
        acked: Sequence[str],
    ) -> int:
        """``applied``/``rejected``: (message id, score) pairs; ``blobs``: (online key, blob) pairs.
        Returns COMMITTED, ALREADY_COMMITTED (a retry after a lost reply), FENCED or DUPLICATE."""
        args: list[bytes | str | int] = [
            self._token,
            self._group,
            px or 0,
            len(applied),
            len(rejected),
            len(blobs),
        ]
        for message_id, score in (*applied, *rejected):
            args += [message_id, score]
        for key, blob in blobs:
            args += [key, blob]
        args += [ipc_bytes(history), ipc_bytes(rejected_records), len(applied), *acked]
        keys = [
            self._keys.owner, self._keys.applied, self._keys.rejected, self._keys.outbox,
            self._keys.receipt(receipt_id), self._stream,
        ]  # fmt: skip
        return int(self._script(keys=keys, args=args))


def drain(
    client: redis.Redis,
    keys: StateKeys,
    sessions: sessionmaker[Session],
    offline: OfflineStore,
    source: RunSource,
) -> int:
    """Applies every receipt waiting in the outbox; returns how many were applied."""
    applied = 0
    for raw in client.lrange(keys.outbox, 0, -1):
        receipt_key = raw.decode() if isinstance(raw, bytes) else str(raw)
        receipt_id = receipt_key.rsplit(":", 1)[-1]
        fields = client.hgetall(receipt_key)
        if fields:
            with write_session(sessions) as session:
                done = session.get(IngestionReceiptRow, receipt_id) is not None
            if not done:
                _apply_receipt(fields, receipt_id, sessions, offline, source)
                applied += 1
        pipeline = client.pipeline(transaction=True)
        pipeline.lrem(keys.outbox, 1, receipt_key)
        pipeline.delete(receipt_key)
        pipeline.execute()
    return applied


def _apply_receipt(
    fields: Mapping[Any, Any],
    receipt_id: str,
    sessions: sessionmaker[Session],
    offline: OfflineStore,
    source: RunSource,
) -> None:
    history = ipc_table(fields[b"history"])
    rejected = ipc_table(fields[b"rejected"])
    if history.num_rows:
        offline.write(source.view, source.version, history)
    with write_session(sessions) as session:
        if session.get(IngestionReceiptRow, receipt_id) is not None:
            return
        record_outcome(
            session,
            source,
            accepted=int(fields[b"accepted"]),
            rejected=rejected.drop_columns(["record_key"]),
            record_keys=rejected.column("record_key").to_pylist(),
        )
        session.add(IngestionReceiptRow(receipt_id=receipt_id, run_id=source.run_id, applied_at_us=now_us()))
