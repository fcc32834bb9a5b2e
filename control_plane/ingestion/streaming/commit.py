"""Atomic, idempotent commit of one processed read batch to Redis.

A batch is one optimistic Redis transaction on the committer's own connection. ``begin`` WATCHes the
owner key and the applied / rejected id sets (sorted sets, one member per message id, scored by its
stream time: a Redis stream id's milliseconds, a Kafka record's timestamp) and, in the same round trip,
reads the owner and which of the batch's ids those sets hold.
``commit`` then sends, in one MULTI/EXEC: the ids into the applied / rejected sets, the online blobs, the
batch's receipt (offline history rows and rejected records as Arrow IPC) onto the outbox list, and the
XACK of the messages. Each blob goes through batch ingestion's check (``online.WRITE_IF_NOT_OLDER``),
never over a value with a later event time: a plain SET let a batch put an older value over a fresher
one written by another consumer group of the view, or emitted for an event older than the state a
restarted materializer rebuilt (a record replayed from the quarantine). Redis refuses the EXEC if any
watched key changed since ``begin`` (a newer materializer took ownership, or another consumer applied
ids), so the check and the writes are atomic together: either all of it happens or none, and a SIGKILL
at any point leaves either an unapplied batch (redelivered, reclaimed) or an applied one with its
receipt waiting in the outbox. A retry after a dropped connection watches and checks again, and finds
its own receipt if the lost EXEC went through.

Native commands rather than one Lua script for the whole batch: the batch's ids and receipt are packed
straight into RESP by hiredis and parsed by Redis in C, where a script spent more time turning thousands
of arguments into Lua strings and back than the commands themselves took. Only the online writes go
through the check script, by EVALSHA, a thousand keys a call; the MULTI loads it first (SCRIPT LOAD),
because EXEC does not roll back: an EVALSHA that Redis's script cache no longer knew (flushed, or a
restarted Redis) would fail alone while the ids, receipt and XACK committed without their online values.
The trim point's script (``RAISE_TRIM_POINT``) runs the same way: EVALSHA and SCRIPT LOAD, not EVAL, are
the scripting commands the materializer needs (``redis_access.py``).

``outbox.drain`` then moves receipts on to the offline store and SQL.

A ``begin`` that finds neither the owner key nor the delete fence finds a Redis that lost its data
(restarted without persistence, or flushed): no materializer took the view over (taking it sets the owner
key), and a delete sets the fence before it removes the owner key. The committer then takes ownership back
(``SET NX``: of several materializers that find it gone, one gets it and the others are fenced) rather
than stopping as fenced out by nobody; the redis source re-creates its consumer group the same way. The
trim point the materializer computed before the loss is dropped, not committed into the new data
(``redis_lost``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
import pyarrow as pa
import redis

from control_plane.ingestion.online import WRITE_IF_NOT_OLDER, write_calls
from control_plane.ingestion.streaming.state_keys import StateKeys

ALREADY_COMMITTED, COMMITTED, FENCED, DUPLICATE = 1, 0, -1, -2
#: The receipt fields naming the run whose counters it goes to: a receipt left in an outbox when its view
#: version is deleted is drained by the delete's cleanup (``orphans.py``), which runs no materializer and
#: so cannot derive the run id (from the stream's name, which no key of the receipt's held).
RECEIPT_RUN = (b"run_id", b"source_id")


def receipt_run_fields(run: tuple[str, str]) -> tuple[bytes | str, ...]:
    """The ``HSET`` field / value pairs of ``RECEIPT_RUN`` (none for a committer given no run)."""
    return () if not run[0] else (RECEIPT_RUN[0], run[0], RECEIPT_RUN[1], run[1])


_log = logging.getLogger("aether.ingestion.stream")
_WRITE_SHA = hashlib.sha1(WRITE_IF_NOT_OLDER.encode()).hexdigest()  # the script's name in Redis


def ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def ipc_table(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


Command = tuple[bytes | str | int | float, ...]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _scored(ids: Sequence[str], times_ms: Sequence[int]) -> list[str | int]:
    """``score, member`` pairs for ZADD: each id scored by its stream time."""
    pairs: list[str | int] = [0] * (2 * len(ids))
    pairs[0::2] = times_ms
    pairs[1::2] = ids
    return pairs


@dataclass(frozen=True, slots=True)
class Trim:
    """What a commit drops from the applied / rejected id sets (the materializer's module docstring
    says when that is safe): the members scored below ``below_ms``, down to ``floor_ms`` (None: all
    of them), except the ``held`` ids, which the source may deliver again."""

    below_ms: int
    floor_ms: int | None = None
    held: Sequence[str] = ()
    #: The longest window, lateness and skew that ``below_ms`` lies before the resume point (None: unknown).
    reach_ms: int | None = None


#: Sets the trim point (KEYS[1]) to ARGV[1] and its reach (KEYS[2]) to ARGV[2] ("": unknown) only when
#: that raises it. A lower point comes from a run with a longer lateness or window, or from a group
#: re-created at the trim point (which resumes there, a window before where its sets are trimmed): saved,
#: it marked ids processed and dropped from the sets as unprocessed, and a group re-created there read
#: them again as new (``redis_source.py``). Read and written in the commit's transaction, so nothing
#: between them lowers it either.
RAISE_TRIM_POINT = """
local held = tonumber(redis.call('GET', KEYS[1]))
if held == nil or held < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
  if ARGV[2] == '' then redis.call('DEL', KEYS[2]) else redis.call('SET', KEYS[2], ARGV[2]) end
end
return 0
"""


_RAISE_SHA = hashlib.sha1(RAISE_TRIM_POINT.encode()).hexdigest()

#: Stream ids (``ms-seq``, decimal, as Redis writes them: no leading zeros) compared exactly: up to
#: 2**64 - 1 each part, past the doubles Lua's numbers are. Shared with ``redis_source.CREATE_GROUP``.
LUA_ID_LESS = """
local function number_less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local function id_less(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  if a_ms ~= b_ms then return number_less(a_ms, b_ms) end
  return number_less(a_seq, b_seq)
end
"""

#: Drops from ``refused_ahead`` (KEYS[1]) the members scored below the trim point (ARGV[2]) whose entry
#: of stream KEYS[3] is acknowledged: below the oldest entry pending in group ARGV[1] (all of them when
#: none is). Such an entry is never delivered again, unless the group is lost; then it is re-created
#: after the greatest id dropped here, kept at KEYS[2] (raised only): every entry up to that id was
#: delivered (a group is delivered entries in id order) and none is pending, so all were processed. An
#: entry still pending below keeps the members above it; a group gone (NOGROUP) keeps them all.
TRIM_REFUSED_AHEAD = (
    LUA_ID_LESS
    + """
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
if #old == 0 then return 0 end
local pending = redis.pcall('XPENDING', KEYS[3], ARGV[1])
if type(pending) ~= 'table' or pending.err then return 0 end
local oldest = false
if tonumber(pending[1]) > 0 then oldest = pending[2] end
local through = redis.call('GET', KEYS[2])
local dropped = {}
for _, id in ipairs(old) do
  if not oldest or id_less(id, oldest) then
    dropped[#dropped + 1] = id
    if not through or id_less(through, id) then through = id end
  end
end
for first = 1, #dropped, 1000 do
  redis.call('ZREM', KEYS[1], unpack(dropped, first, math.min(first + 999, #dropped)))
end
if #dropped > 0 then redis.call('SET', KEYS[2], through) end
return #dropped
"""
)
_TRIM_AHEAD_SHA = hashlib.sha1(TRIM_REFUSED_AHEAD.encode()).hexdigest()


class Committer:
    """Commits read batches of one materializer (one batch at a time; see the module docstring)."""

    def __init__(
        self,
        client: redis.Redis,
        keys: StateKeys,
        stream: str | None,
        group: str,
        token: str,
        run: tuple[str, str] = ("", ""),
    ) -> None:
        """``stream``: the Redis stream whose messages the commit acknowledges (XACK); None for a source
        that is acknowledged outside Redis (Kafka). ``run``: the run id and source its receipts record
        (``RECEIPT_RUN``)."""
        self._keys = keys
        self._run = run
        self._stream = stream
        self._group = group
        self._token = token
        pool = client.connection_pool
        # The committer's own connection: WATCH state belongs to a connection, so it must not be shared.
        self._connection: Any = pool.connection_class(**pool.connection_kwargs)
        self._watching = False
        self._owned = False
        self._deleted = False
        self._redis_lost = False  # see ``redis_lost``

    @property
    def owned(self) -> bool:
        """Whether the last ``begin`` found this materializer still owning the view (never once the
        view version is deleted)."""
        return self._owned

    @property
    def deleted(self) -> bool:
        """Whether the last ``begin`` found the view version deleted."""
        return self._deleted

    def redis_lost(self) -> bool:
        """Whether a ``begin`` since the last call found Redis without its data and took ownership back,
        or the state keys were reset since (``state_reset``). A trim point computed before then is the
        lost group's and sets': committed into the new data, it marked entries of the new stream not read
        yet as processed (``redis_source.py`` re-creates a group lost alone at that mark, and would skip
        them)."""
        lost, self._redis_lost = self._redis_lost, False
        return lost

    def state_reset(self) -> None:
        """Says that the state keys were reset outside a commit: the Redis source created its group for
        a new stream (deleted and written again) and dropped the old stream's sets and trim point
        (``redis_source.CREATE_GROUP``). Followed as a loss of Redis's data is (``redis_lost``)."""
        self._redis_lost = True

    def close(self) -> None:
        self._connection.disconnect()

    def begin(self, ids: Sequence[str], receipt_id: str | None = None) -> set[str]:
        """Watches this batch's keys; returns which of ``ids`` were applied or rejected before. With
        ``receipt_id``, also whether that receipt exists (reported as the id ``receipt_id`` in the set)."""
        keys = self._keys
        commands: list[Command] = [
            ("UNWATCH",),
            # The fence too: a delete's cleanup sets it before scanning for the version's keys, so a
            # batch begun before it aborts at EXEC instead of writing behind the scan.
            ("WATCH", keys.owner, keys.applied, keys.rejected, keys.refused_ahead, keys.deleted),
            ("GET", keys.owner),
            ("EXISTS", keys.deleted),
        ]
        if ids:
            commands += [
                ("ZMSCORE", keys.applied, *ids),
                ("ZMSCORE", keys.rejected, *ids),
                ("ZMSCORE", keys.refused_ahead, *ids),
            ]
        if receipt_id is not None:
            commands.append(("EXISTS", keys.receipt(receipt_id)))
        replies = self._exchange(commands)
        if replies[2] is None and not replies[3]:  # Redis lost its data (see the module docstring)
            taken = self._exchange([("SET", keys.owner, self._token, "NX")])[0]
            if taken:
                self._redis_lost = True
                _log.warning(
                    "the owner key of %s is gone and no delete fence is set: Redis lost its data (restarted"
                    " without persistence, or flushed). Taking ownership back; the batches committed and"
                    " not yet drained to the offline store and SQL were lost with it",
                    keys.prefix,
                )
            replies = self._exchange(commands)  # the SET touched a watched key: watch again
        self._watching = True
        self._deleted = bool(replies[3])
        self._owned = not self._deleted and replies[2] is not None and _text(replies[2]) == self._token
        seen = set()
        if ids:
            seen = {
                i
                for i, a, r, ahead in zip(ids, replies[4], replies[5], replies[6], strict=True)
                if a is not None or r is not None or ahead is not None
            }
        if receipt_id is not None and replies[-1]:
            seen.add(receipt_id)
        return seen

    def commit(
        self,
        receipt_id: str,
        applied: Sequence[str],
        rejected: Sequence[str],
        blobs: Sequence[tuple[bytes, bytes]],
        px: int | None,
        history: pa.Table,
        rejected_records: pa.Table,
        stream_times_ms: Callable[[Sequence[str]], Sequence[int]],
        trim: Trim | None = None,
        ingested_high_us: int | None = None,
    ) -> int:
        """Writes a batch begun with ``begin`` (whose result the caller has acted on). ``applied`` /
        ``rejected``: the batch's message ids (all of them acknowledged); ``blobs``: (online key, blob)
        pairs, each written unless the key holds a value with a later event time. Returns
        COMMITTED, ALREADY_COMMITTED (a retry after a lost reply), FENCED or DUPLICATE.
        ``stream_times_ms``: the source's, scoring the ids. ``trim``: also drop old ids (:class:`Trim`).
        Inside the transaction, not beside it: a trim from outside would change the watched sets and
        refuse this commit as a duplicate. The held ids are first raised to the trim's score (only those
        still there, ``XX``; only upwards, ``GT``) so that it spares them, and the batch's ids are added
        after it: a Kafka record stamped earlier than the trim point is still kept while it may come
        back. ``ingested_high_us``: the greatest ingestion time in ``history`` and before, stored (only
        the owner commits, so it never goes down) for a successor to start above."""
        refused = self.watch_again([*applied, *rejected], receipt_id)
        if refused is not None:
            return refused
        if not self._owned:
            self._unwatch()
            return FENCED
        keys = self._keys
        writes: list[Command] = []
        if trim is not None:
            floor = "-inf" if trim.floor_ms is None else trim.floor_ms
            for key in (keys.applied, keys.rejected):
                if trim.held:
                    raised = _scored(trim.held, [trim.below_ms] * len(trim.held))
                    writes.append(("ZADD", key, "XX", "GT", *raised))
                writes.append(("ZREMRANGEBYSCORE", key, floor, f"({trim.below_ms}"))
            if self._stream is not None:
                writes += [
                    ("SCRIPT", "LOAD", TRIM_REFUSED_AHEAD),
                    ("EVALSHA", _TRIM_AHEAD_SHA, 3, keys.refused_ahead, keys.refused_ahead_through,
                     self._stream, self._group, trim.below_ms),
                ]  # fmt: skip
            reach = "" if trim.reach_ms is None else trim.reach_ms
            # Loaded in the transaction, as the online writes' script, so a script cache Redis lost cannot
            # fail it; by EVALSHA, not EVAL, which a user the earlier releases accepted may lack
            # (``redis_access.py``).
            writes += [
                ("SCRIPT", "LOAD", RAISE_TRIM_POINT),
                ("EVALSHA", _RAISE_SHA, 2, keys.trimmed_below, keys.trim_reach, trim.below_ms, reach),
            ]
        if applied:
            writes.append(("ZADD", keys.applied, *_scored(applied, stream_times_ms(applied))))
        if rejected:
            writes += self._rejected_adds(rejected, stream_times_ms(rejected))
        if blobs:
            writes.append(("SCRIPT", "LOAD", WRITE_IF_NOT_OLDER))
            writes += [
                ("EVALSHA", _WRITE_SHA, len(online), *online, *args)
                for online, args in write_calls(blobs, px or None, keys.deleted)
            ]
        if ingested_high_us is not None and history.num_rows:
            writes.append(("SET", keys.ingested_high, ingested_high_us))
        receipt = keys.receipt(receipt_id)
        writes += [
            ("HSET", receipt, "history", ipc_bytes(history), "rejected", ipc_bytes(rejected_records),
             "accepted", len(applied), *receipt_run_fields(self._run)),
            ("RPUSH", keys.outbox, receipt),
        ]  # fmt: skip
        if (applied or rejected) and self._stream is not None:
            writes.append(("XACK", self._stream, self._group, *applied, *rejected))
        self._watching = False  # EXEC ends the watch, whatever its outcome
        replies = self._exchange([("MULTI",), *writes, ("EXEC",)])
        results = replies[-1]
        if results is None:  # a watched key changed: find out which way
            seen = self.begin([*applied, *rejected])
            if self._owned and not seen:
                # Still ours and none of the batch applied: the change was Redis losing its data (a
                # flush since ``begin``; ownership was just taken back). Watching again: commit anew,
                # without a trim point computed before the loss (``redis_lost``).
                trim = None if self._redis_lost else trim
                # Everything else as before, the greatest ingestion time too: left out, a successor
                # started after this commit found none and wrote with its clock, maybe behind.
                return self.commit(
                    receipt_id, applied, rejected, blobs, px, history, rejected_records, stream_times_ms,
                    trim, ingested_high_us,
                )  # fmt: skip
            self._unwatch()
            return DUPLICATE if self._owned else FENCED
        for result in results:
            if isinstance(result, Exception):
                raise result
        return COMMITTED

    def _rejected_adds(self, rejected: Sequence[str], times_ms: Sequence[int]) -> list[Command]:
        """The ZADDs of a batch's rejected ids: by their stream time, except, on a Redis stream, those
        ahead of this host's clock, which go to ``refused_ahead`` scored by the clock (see there)."""
        now_ms = time.time_ns() // 1_000_000
        ahead = [k for k, ms in enumerate(times_ms) if ms > now_ms] if self._stream is not None else []
        if not ahead:
            return [("ZADD", self._keys.rejected, *_scored(rejected, times_ms))]
        skipped = set(ahead)
        on_time = [k for k in range(len(rejected)) if k not in skipped]
        adds: list[Command] = [
            ("ZADD", self._keys.refused_ahead, *_scored([rejected[k] for k in ahead], [now_ms] * len(ahead)))
        ]
        if on_time:
            scored = _scored([rejected[k] for k in on_time], [times_ms[k] for k in on_time])
            adds.append(("ZADD", self._keys.rejected, *scored))
        return adds

    def watch_again(self, ids: Sequence[str], receipt_id: str) -> int | None:
        """When a retry (or a connection dropped since ``begin``) ended the watch, begins again: returns
        ALREADY_COMMITTED (the receipt is there: a lost reply), DUPLICATE or FENCED when the batch must not
        be committed, else None (watching, as after ``begin``). ``commit`` calls it first; the
        materializer calls it before taking the commit gate's SQL lock (``commit_gate.py``), so that a
        Redis that stopped answering is met here, without the lock, and not once per retry under it."""
        if self._watching:
            return None
        seen = self.begin(ids, receipt_id)
        if receipt_id in seen:
            self._unwatch()
            return ALREADY_COMMITTED
        if seen:
            self._unwatch()
            return DUPLICATE if self._owned else FENCED
        return None

    def _unwatch(self) -> None:
        self._exchange([("UNWATCH",)])
        self._watching = False

    def _exchange(self, commands: Iterable[Command]) -> list[Any]:
        """Sends ``commands`` in one write and reads one reply each. Any failure drops the connection
        (and with it the watch): replies left unread would otherwise answer the next exchange."""
        listed = list(commands)
        connection = self._connection
        try:
            # hiredis's stub types the argument as a 1-tuple; it takes any number of arguments.
            packed = b"".join(hiredis.pack_command(c) for c in listed)  # type: ignore[arg-type]
            connection.send_packed_command([packed])
            return [connection.read_response() for _ in listed]
        except BaseException:
            self._watching = False
            connection.disconnect()
            raise
