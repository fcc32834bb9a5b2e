"""Redis Streams behind ``StreamSource``: one stream per source, one consumer group per materializer.

Connection drops are retried with backoff (redis-py reconnects on the next command). A message delivered
by an ``XREADGROUP`` whose reply was lost in a drop stays pending for this consumer and comes back through
``reclaim`` (``XAUTOCLAIM``) once idle. A Redis that stops answering (frozen, partitioned) ends each
command in the client's socket timeout (``control_plane.redis_clients``) and is retried the same way; the
blocking ``XREADGROUP`` of ``read`` runs on a client whose timeout is longer by its ``BLOCK``, so that an
idle stream answers empty instead of timing out.

A Redis that comes back without its data (restarted without persistence, or flushed) has lost the stream
and the consumer group with it: the group's commands then fail with ``NOGROUP`` (``XINFO GROUPS`` with
``no such key``; an ``XREADGROUP`` blocked when the stream went with ``UNBLOCKED the stream key no longer
exists``). The source re-creates the group, as at start, at the stream's start (``0``): the stream
is new, so every entry in it was added after the loss and is new to the materializer, whereas ``$`` would
skip those added before the group came back. The entries the group had not read before the loss are gone
with the stream and never counted (a warning says so).

Should only the group have been lost (``XGROUP DESTROY``, the stream kept), ``0`` would read the retained
stream again: the entries still in the applied / rejected id sets are skipped, but those trimmed from
them (scored below the trim point, see the materializer's module docstring) were applied, and counted,
a second time. So the group is re-created just before the materializer's trim point
(``processed_below``, ``StateKeys.trimmed_below``, set in the commit that trims): every entry before it
was delivered and acknowledged, and each entry from it on is in the id sets if it was processed, so it
is read again and skipped, or read for the first time (pending in the lost group, or never delivered).
The point is an id, not an entry: it holds when ``XTRIM`` removed the entries around it. Refused ids
ahead of the clock lie past every trim point and are trimmed apart (``StateKeys.refused_ahead``): the group
comes back after the greatest of them trimmed instead, when that is later (every entry up to it was
acknowledged), or those trimmed were read and counted again. A Redis that
lost its data lost the trim point too, and the group comes back at ``0``. So does a group whose stream
key alone was deleted (``DEL``, the state keys kept), which fails the same way as a group destroyed
alone: the new stream's entries are all new, and at the trim point those with explicit ids older than it
were never delivered, counted nowhere. Which happened is told by the newest id of each id set: the stream
kept is the one they were processed from if either is still in it (the retention a rebuild needs, from
the group's position less the longest window, the lateness and the skew, keeps it); a new stream holds
neither, unless a producer wrote the old ids again, the same entries. A new stream's group, created at ``0``,
also resets the materializer's state in the same script: the applied / rejected sets, the trim point and
its reach, all the old stream's. Kept, the sets' newest id stayed an old-stream id that the new stream
does not hold, so every later loss of the group re-created it at ``0`` too, and the new stream's entries
that commits had already trimmed from the sets were applied and counted a second time. The materializer
then drops the trim point it holds, as after a loss of Redis's data (``Committer.state_reset``), and its
windows in memory keep the events applied before, as then (the online values, which Redis kept here,
too). A stream kept whose newest processed ids were removed (``XDEL``; an ``XTRIM`` past the group's
position, against that retention) looks new: whatever it still holds is read, and counted, again. A
group that is new when the materializer starts (destroyed while it was stopped) is created at the same
point, by the source's first command on the group, which comes after the materializer named the trim
point's key: created at ``0`` and moved there afterwards (``XGROUP SETID``), a consumer of the group
reading in between was delivered the trimmed entries and applied them again. The point is read and the
group created in one script (``CREATE_GROUP``), so no trim committed in between lowers it below ids
dropped meanwhile. It runs by EVALSHA (loaded when Redis does not know it), not EVAL (``redis_access.py``)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from itertools import chain
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
import redis

from control_plane.ingestion.streaming.commit import LUA_ID_LESS
from control_plane.ingestion.streaming.lateness import DEFAULT_MAX_FUTURE_SKEW_S, ahead_of_clock
from control_plane.ingestion.streaming.source import (
    GREATEST_REDIS_ID,
    IdsAhead,
    Lag,
    MessageBatch,
    RecordedScores,
    StreamMessage,
    first_values,
    id_millis,
    id_parts,
    object_text,
    redis_id_problems,
)
from control_plane.ingestion.streaming.state_keys import StateKeys
from control_plane.ingestion.streaming.stops import StopAsked
from control_plane.ingestion.streaming.stream_time import wall_clock_ms
from control_plane.redis_clients import blocking_timeout

_log = logging.getLogger("aether.ingestion.stream")
T = TypeVar("T")
RETRY_SECONDS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
#: The greatest sequence part of a stream id: ``{ms}-{LAST_SEQUENCE}`` is the last id of millisecond ``ms``.
LAST_SEQUENCE = 2**64 - 1
#: Creates group ARGV[1] of stream KEYS[1] (MKSTREAM) just before the trim point stored at KEYS[2], or
#: after the greatest refused id ahead of the clock trimmed (KEYS[7], ``StateKeys.refused_ahead_through``)
#: when that is later, if the stream holds the newest id of the applied (KEYS[3]), rejected (KEYS[4]) or
#: refused-ahead (KEYS[6]) set, or that trimmed id; else (none of those keys given, no trim point, a new
#: stream) at ``0``. A new stream (the sets or the trim point there, their newest ids not in it) also
#: resets that state: the sets, the trim point and its reach (KEYS[5]), and the trimmed id, which are the
#: old stream's. Returns ``[id created at, 1 if reset else 0]``, or nil when the group already existed
#: (and nothing was reset: whoever created it decided).
CREATE_GROUP = (
    LUA_ID_LESS
    + f"""
local function in_stream(id)
  if not id then return false end
  local found = redis.pcall('XRANGE', KEYS[1], id, id)
  return type(found) == 'table' and not found.err and #found > 0
end
local at, reset = '0', 0
if KEYS[2] then
  local applied = redis.call('ZREVRANGE', KEYS[3], 0, 0)[1]
  local rejected = redis.call('ZREVRANGE', KEYS[4], 0, 0)[1]
  local ahead = redis.call('ZREVRANGE', KEYS[6], 0, 0)[1]
  local through = redis.call('GET', KEYS[7])
  local below = tonumber(redis.call('GET', KEYS[2]))
  if in_stream(applied) or in_stream(rejected) or in_stream(ahead) or in_stream(through) then
    if below and below > 0 then at = string.format('%d-{LAST_SEQUENCE}', below - 1) end
    if through and (at == '0' or id_less(at, through)) then at = through end
  elseif below or applied or rejected or ahead or through then
    reset = 1
  end
end
local created = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], at, 'MKSTREAM')
if type(created) == 'table' and created.err then
  if string.sub(created.err, 1, 9) == 'BUSYGROUP' then return nil end
  return created
end
if reset == 1 then redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]) end
return {{at, reset}}
"""
)

#: Removes consumer ARGV[2] from group ARGV[1] of stream KEYS[1] when no entry is pending for it (returns
#: 1; 0 when there was no such consumer), else keeps it (returns -1): ``XGROUP DELCONSUMER`` drops the
#: consumer's pending entries with it, and the group never delivers them again (its last delivered id is
#: past them), so an entry read and not yet committed would be lost, where kept it is reclaimed by the
#: next materializer (``XAUTOCLAIM``). One script, so nothing is delivered to it between check and removal.
DELETE_IDLE_CONSUMER = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending > 0 then return -1 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
"""


def _text(value: Any) -> str:
    # surrogateescape: a byte that is not UTF-8 stays recognizable (see ``utf8_checked``).
    return value.decode("utf-8", errors="surrogateescape") if isinstance(value, bytes) else str(value)


def _group_lost(error: redis.ResponseError) -> bool:
    """Whether ``error`` says the stream or its consumer group does not exist (lost with Redis's data).
    An XREADGROUP blocked on a stream that disappears (FLUSHALL, DEL) is answered ``UNBLOCKED the stream
    key no longer exists``: taken for anything else, the materializer exited on the loss it follows when
    any other command meets it. Not any ``UNBLOCKED``: ``CLIENT UNBLOCK ... ERROR`` says nothing was lost."""
    message = str(error)
    return (
        message.startswith("NOGROUP")
        or message == "no such key"
        or message.startswith("UNBLOCKED the stream key no longer exists")
    )


def _batch(entries: list[Any]) -> MessageBatch:
    """Entries as decoded by hiredis (``[id, [k1, v1, ...]]`` of str), parsed by redis-py (fields as a
    dict) or raw bytes. The common case, every message with the same fields in the same order (one
    producer), is sliced column by column out of one flat list: no Python work per message."""
    ids = [entry[0] for entry in entries]
    fields = [entry[1] for entry in entries]
    if ids and isinstance(ids[0], str) and isinstance(fields[0], list) and fields[0]:
        width = len(fields[0])
        names = fields[0][0::2]
        if width % 2 == 0 and len(set(names)) == len(names) and len(set(map(len, fields))) == 1:
            flat = list(chain.from_iterable(fields))
            n = len(fields)
            if all(flat[2 * j :: width].count(name) == n for j, name in enumerate(names)):
                columns: dict[str, list[str | None]] = {
                    name: flat[2 * j + 1 :: width] for j, name in enumerate(names)
                }
                return MessageBatch(ids, columns)
    messages = []
    flagged: dict[int, list[str]] = {}
    copies: dict[int, str] = {}
    for row, (entry_id, pairs) in enumerate(entries):
        if isinstance(pairs, dict):
            parsed = {_text(k): _text(v) for k, v in pairs.items()}
        else:
            texts = [_text(x) for x in pairs or ()]
            given = list(zip(texts[::2], texts[1::2], strict=False))
            parsed, repeated = first_values(given, "entry")
            if repeated:
                flagged[row] = repeated
                copies[row] = object_text(given)  # every value: its replay reads the repeat again
        messages.append(StreamMessage(_text(entry_id), parsed))
    return MessageBatch.of(messages, flagged, copies=copies)


class RedisStreamSource:
    acks_in_commit = True  # the commit transaction carries the XACK (see commit.py)
    trim_floor_ms: int | None = None

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        group: str,
        consumer: str,
        stop: threading.Event | None = None,
        max_future_skew_s: int = DEFAULT_MAX_FUTURE_SKEW_S,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        """``max_future_skew_s``: how far ahead of ``clock_ms`` an entry's id may be (``ahead_of_clock``)."""
        self.name = stream
        self.max_future_skew_s = max_future_skew_s
        self._clock_ms = clock_ms
        # Set when the process is asked to stop: a retry during a Redis outage then ends (``retrying``).
        self.stop = stop or threading.Event()
        self._client = client
        # A client to the same server whose XREADGROUP and XRANGE replies stay raw and are decoded by
        # hiredis (C): see ``read``. Its pool is its own, as decoding is a property of the connections.
        # Bytes that are not UTF-8 are kept as lone surrogates rather than failing the read, and the
        # materializer quarantines their messages (``source.utf8_checked``). As U+FFFD ("replace") they
        # passed validation, and two different join keys became one entity.
        pool = client.connection_pool
        self._connection_class = pool.connection_class
        self._decoding = {
            **pool.connection_kwargs,
            "decode_responses": True,
            "encoding_errors": "surrogateescape",
        }
        self._raw = self._raw_client(self._decoding.get("socket_timeout"))
        # The raw clients of ``read``, by block time: an XREADGROUP that blocks needs a socket timeout
        # longer than its BLOCK, or a read of an idle stream timed out (and was retried) instead of
        # answering empty (see ``control_plane.redis_clients``). One in practice: the materializer
        # always reads with the same block time.
        self._readers: dict[int, redis.Redis] = {}
        self._group = group
        self._consumer = consumer
        self._reclaim_cursor = "0-0"
        self._processed_below: StateKeys | None = None  # the trim point's keys: see ``processed_below``
        self._state_reset: Callable[[], None] = lambda: None  # told when CREATE_GROUP resets that state
        self._grouped_once = False  # the group is created (if new) by the first command on it
        self._create_script = client.register_script(CREATE_GROUP)
        self._delete_consumer_script = client.register_script(DELETE_IDLE_CONSUMER)

    def _raw_client(self, socket_timeout: float | None) -> redis.Redis:
        options = {**self._decoding, "socket_timeout": socket_timeout}
        raw = redis.Redis(
            connection_pool=redis.ConnectionPool(connection_class=self._connection_class, **options)
        )
        for command in ("XREADGROUP", "XRANGE"):
            raw.set_response_callback(command, lambda response, **_options: response)
        return raw

    def _reader(self, block_ms: int) -> redis.Redis:
        """The raw client for an XREADGROUP blocking ``block_ms``: socket timeout the client's plus that."""
        reader = self._readers.get(block_ms)
        if reader is None:
            timeout = blocking_timeout(self._decoding.get("socket_timeout"), block_ms)
            reader = self._readers[block_ms] = self._raw_client(timeout)
        return reader

    def _create_group(self) -> str | None:
        """Creates the group if it does not exist, just before the trim point (``CREATE_GROUP``); returns
        the id it was created at, None if it existed. A new stream's group resets the state keys."""
        state = self._processed_below
        keys = [self.name]
        if state is not None:
            keys += [state.trimmed_below, state.applied, state.rejected, state.trim_reach]
            keys += [state.refused_ahead, state.refused_ahead_through]
        # EVALSHA, loading the script when Redis does not know it: not EVAL (``redis_access.py``).
        created: Any = self.retrying(lambda: self._create_script(keys, [self._group]))
        if created is None:
            return None
        if int(created[1]):
            _log.warning(
                "stream %r is not the one the ids of %s were processed from (it holds neither set's newest"
                " id: deleted and written again): its group is created at its start, and the old stream's"
                " applied and rejected ids and trim point are reset, so that the new stream's own govern a"
                " later loss of its group (the windows in memory keep the events applied before)",
                self.name, state.prefix if state is not None else "?",
            )  # fmt: skip
            self._state_reset()
        return _text(created[0])

    def processed_below(self, keys: StateKeys, reset: Callable[[], None] | None = None) -> None:
        """Names the materializer's state keys: the stream time (ms) below which it processed every entry
        and dropped its id from the applied / rejected sets (``trimmed_below``), and those sets. A lost
        group is re-created there, not at ``0``, if the stream is the one processed (see the module doc);
        so is a new group (destroyed while no materializer ran), which the first command on it creates,
        after this call. A group created for a new stream resets that state, and calls ``reset``: a
        trim point computed before is the old stream's."""
        self._processed_below = keys
        if reset is not None:
            self._state_reset = reset

    def _grouped(self, operation: Callable[[], T]) -> T:
        """``retrying(operation)`` for a command on the group: one that fails because Redis lost the group
        (see the module doc) re-creates it and runs again. The first creates the group if it is new."""
        if not self._grouped_once:
            self._create_group()
            self._grouped_once = True
        while True:
            try:
                return self.retrying(operation)
            except redis.ResponseError as exc:
                if not _group_lost(exc):
                    raise
                at = self._create_group() or "the point another consumer re-created it at"
                _log.warning(
                    "consumer group %r of stream %r was lost (%s): Redis restarted without its data, or was"
                    " flushed, or the group was destroyed. Re-creating it after %s (the stream's start, or"
                    " the trim point of the ids processed): the entries added since are each read and"
                    " counted once; those not read before the loss are lost with it and never counted"
                    " (the windows in memory keep the events applied before)",
                    self._group, self.name, exc, at,
                )  # fmt: skip
                self._reclaim_cursor = "0-0"  # a position in the stream that was lost

    def retrying(self, operation: Callable[[], T]) -> T:
        """Runs ``operation``, retrying on connection errors with backoff (forever: a materializer waits
        for Redis to come back rather than exiting), unless :attr:`stop` is set meanwhile (StopAsked)."""
        attempt = 0
        while True:
            try:
                return operation()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                delay = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
                _log.warning("redis unavailable (%s); retrying in %.2fs", exc, delay)
                if self.stop.is_set() or self.stop.wait(delay):
                    raise StopAsked(f"stopped while Redis was unavailable ({exc})") from exc
                attempt += 1

    def read(self, count: int, block_ms: int) -> MessageBatch:
        # Raw command: redis-py's reply parsing builds a dict per entry in Python, which costs more than
        # everything else the materializer does per event; the raw reply comes straight from hiredis.
        reply: Any = self._grouped(
            lambda: self._reader(block_ms).xreadgroup(
                self._group, self._consumer, {self.name: ">"}, count=count, block=block_ms
            )
        )
        if not reply:
            return MessageBatch([], {})
        # RESP3 answers a map {stream: entries}, RESP2 a list [[stream, entries]].
        entries = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
        return _batch(entries)

    def reclaim(self, min_idle_ms: int, count: int) -> MessageBatch:
        reply: Any = self._grouped(
            lambda: self._client.xautoclaim(
                self.name, self._group, self._consumer, min_idle_ms, self._reclaim_cursor, count=count
            )
        )
        next_cursor, entries = reply[0], reply[1]
        deleted = [_text(i) for i in reply[2]] if len(reply) > 2 else []
        if deleted:  # trimmed from the stream while pending: nothing left to process
            self.ack(deleted)
        self._reclaim_cursor = _text(next_cursor)
        return _batch([entry for entry in entries if entry is not None and entry[1] is not None])

    def close(self) -> None:
        """Removes this consumer from its group unless entries are still pending for it, and closes the
        raw clients (not ``client``, the caller's). Left in the group, a consumer stayed listed
        (``XINFO CONSUMERS``) for good: named after host and pid by default, one more with every start.
        One try, not retried: a Redis that is down is not waited for on the way out (the consumer then
        stays listed, harmlessly)."""
        try:
            removed = self._delete_consumer_script([self.name], [self._group, self._consumer])
        except redis.RedisError as exc:  # down, the group or stream gone, or no permission: nothing to undo
            _log.warning(
                "consumer %r left in group %r of stream %r: %s", self._consumer, self._group, self.name, exc
            )
        else:
            if removed == -1:
                _log.info(
                    "consumer %r stays in group %r of stream %r: entries are pending for it, which the next"
                    " materializer reclaims",
                    self._consumer, self._group, self.name,
                )  # fmt: skip
        for raw in (self._raw, *self._readers.values()):
            raw.close()

    def ack(self, ids: list[str]) -> None:
        if ids:
            self.retrying(lambda: self._client.xack(self.name, self._group, *ids))

    def history(self, since_ms: int, page: int) -> Iterator[MessageBatch]:
        start = f"{max(since_ms, 0)}-0"
        while True:
            entries: Any = self.retrying(lambda s=start: self._raw.xrange(self.name, min=s, count=page))  # type: ignore[misc]
            if not entries:
                return
            batch = _batch(entries)
            yield batch
            if len(entries) < page or batch.ids[-1] == GREATEST_REDIS_ID:  # nothing can follow it
                return
            start = "(" + batch.ids[-1]

    def keys_as_text(self, names: Collection[str]) -> None:
        """Nothing to flag: every field of a Redis stream entry is text."""

    def recorded_scores_from(self, scores: RecordedScores) -> None:
        """Reads none: an entry's id is its score, and its resume point (an id) bounds them (see there)."""

    def resume_ms(self) -> int:
        """The oldest pending entry's id milliseconds, else the last delivered one's (every entry after
        it, appended later included, has a greater id); 0 when the group was delivered nothing."""
        summary: Any = self._grouped(lambda: self._client.xpending(self.name, self._group))
        if summary["pending"]:
            return id_millis(_text(summary["min"]))
        groups: Any = self._grouped(lambda: self._client.xinfo_groups(self.name))
        for group in groups:
            if _text(group["name"]) == self._group:
                return id_millis(_text(group["last-delivered-id"]))
        return 0

    def _first_after(self, last: str) -> Any:
        if last == GREATEST_REDIS_ID:  # no entry can follow it, and Redis refuses the range after it
            return []
        return self.retrying(lambda: self._client.xrange(self.name, min="(" + last, count=1))

    def order(self, ids: Sequence[str]) -> npt.NDArray[np.int64]:
        return id_parts(ids)[1]

    def unorderable(self, ids: Sequence[str]) -> dict[int, str]:
        return redis_id_problems(ids)

    def stream_times_ms(self, ids: Sequence[str]) -> list[int]:
        parts = "-".join(ids).split("-")
        if len(parts) == 2 * len(ids):  # every id has exactly one "-": the even parts are the ms
            return [int(ms) for ms in parts[0::2]]
        return [id_millis(i) for i in ids]

    def arrival_times_ms(self, ids: Sequence[str]) -> list[int]:
        return self.stream_times_ms(ids)  # an entry's id is its place and its time in the stream

    def ahead_of_clock(self, ids: Sequence[str]) -> dict[int, str]:
        """Judged now, not when read: a Redis stream has no stream time carried from entry to entry, and
        an entry refused is committed (its XACK with it) or delivered again, to be judged again."""
        limit_ms = self._clock_ms() + self.max_future_skew_s * 1000
        return ahead_of_clock(
            self.stream_times_ms(ids), [limit_ms] * len(ids), self.max_future_skew_s, "stream id"
        )

    def held_ids(self) -> list[str]:
        return []  # the commit that records an id also acknowledges it (XACK): never delivered again

    def lag(self) -> Lag:
        groups: Any = self._grouped(lambda: self._client.xinfo_groups(self.name))
        ahead = self._ids_ahead()
        for group in groups:
            if _text(group["name"]) != self._group:
                continue
            last = _text(group["last-delivered-id"])
            behind = group.get("lag")
            following = self._first_after(last)
            if not following:
                return Lag(0, 0.0, ahead)
            messages = int(behind) if behind is not None else cast(int, self._client.xlen(self.name))
            age = max(0.0, time.time() - id_millis(_text(following[0][0])) / 1000)
            return Lag(messages, age, ahead)
        return Lag(0, 0.0, ahead)

    def _ids_ahead(self) -> IdsAhead | None:
        """The stream's last id when it is more than the skew ahead of the clock (``IdsAhead``), else None.
        The last *generated* id, not the last entry's: an entry deleted (XDEL) or trimmed leaves it."""
        info: Any = self.retrying(lambda: self._client.xinfo_stream(self.name))
        last = _text(info["last-generated-id"])
        clock_ms = self._clock_ms()
        ahead_ms = id_millis(last) - clock_ms
        if ahead_ms <= self.max_future_skew_s * 1000:
            return None
        return IdsAhead(self.name, last, ahead_ms, clock_ms, self.max_future_skew_s)
