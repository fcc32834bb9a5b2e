"""Reading the prediction log with a Redis consumer group: at least once, resumable after a restart.

The group is created at the start of the stream (``0``, with ``MKSTREAM``), so a fresh monitor reads
what is still retained. A consumer first re-reads its own pending entries (delivered before a restart
but never acknowledged), oldest first and each once, then new ones (``>``). The caller acknowledges
entries once handled, which may be long after they were read (the monitor keeps the entries of a window
open in memory pending, so that after a restart they build that window again): the pending entries are
read on from the last one read, not from the start, which would hand out the unacknowledged ones again
and again.

After a failure the caller calls :meth:`StreamReader.rewind`: the next read starts again from the pending
entries, so a batch read but not acknowledged is read again instead of being skipped until the next
restart (``>`` only ever hands out entries never delivered). The group is checked again too: a Redis
that restarted without its data has lost it, and reads would otherwise fail with ``NOGROUP`` for good.
Reading an entry again is the caller's to make harmless (see the monitor).

The data plane caps the stream (``XADD MAXLEN ~``), so entries the group was not handed yet can be trimmed
away while the monitor is behind or stopped; ``>`` then just goes on from the first entry left. Each read
of new entries asks, in the same transaction (so nothing is trimmed in between), how many entries the
stream ever removed (``entries-added`` − ``length``) and how many of them the group has accounted for
(its ``entries-read``): where the stream's first entry lies past the group's last delivered one, the
difference was trimmed unread, and is passed to ``on_trimmed``. Redis 7.0 counts ``entries-read`` by
entries delivered, not by position, so after a gap the reader sets the group's counter to the position
it reached (``XGROUP SETID … ENTRIESREAD``), or the next gap would count this one again. What cannot be
told: on Redis before 7 (no ``entries-added``) nothing is detected (logged once); a group whose counter
Redis does not know (created past the start, or entries deleted inside the stream with ``XDEL``) passes
``None``, trimmed but how many unknown. Pending entries trimmed since they were delivered come back with
no fields (see :meth:`StreamReader.read`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio
from redis.exceptions import ResponseError

Entry = tuple[bytes, dict[bytes, bytes] | None]
#: Called with the number of entries trimmed before the group was handed them (None: some, how many
#: unknown).
OnTrimmed = Callable[[int | None], None]

_log = logging.getLogger("aether.control_plane.monitoring")


def entry_order(entry_id: bytes) -> tuple[int, int]:
    """``(milliseconds, sequence)`` of a stream entry id: ids of one stream grow in this order."""
    millis, _, sequence = entry_id.partition(b"-")
    return int(millis), int(sequence or b"0")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def trimmed_unread(info: Mapping[str, Any], group: Mapping[str, Any]) -> int | None:
    """How many entries the stream removed before ``group`` was handed them, from ``XINFO STREAM`` and
    the group's ``XINFO GROUPS`` entry taken at one instant: 0 when none (or Redis cannot tell: before 7),
    None when some were but how many is unknown."""
    added = info.get("entries-added")
    if added is None:  # Redis before 7
        return 0
    removed = int(added) - int(info.get("length", 0))
    last_delivered = entry_order(_text(group.get("last-delivered-id", "0-0")).encode())
    first = info.get("first-entry")
    if first:
        behind = entry_order(first[0]) > last_delivered
    else:  # all removed: behind if the group was not handed the newest entry ever added
        behind = entry_order(_text(info.get("last-generated-id", "0-0")).encode()) > last_delivered
    if removed <= 0 or not behind:
        return 0
    # Every entry the group was handed lies at or before its last delivered one, so before the first
    # entry left: removed too. The rest of the removed ones it never saw.
    read = group.get("entries-read")
    if read is None:
        if last_delivered != (0, 0):
            return None  # Redis lost track of the group's position (created past the start, or XDEL)
        read = 0
    if _deleted_inside(info):
        return None  # entries-added − length counts the entries deleted inside the stream too
    return max(0, removed - int(read))


def _deleted_inside(info: Mapping[str, Any]) -> bool:
    """Whether entries were deleted (``XDEL``) past the stream's first entry, not only trimmed before it."""
    first: Any = info.get("first-entry")
    if not first:
        return False
    return entry_order(_text(info.get("max-deleted-entry-id", "0-0")).encode()) >= entry_order(first[0])


class StreamReader:
    def __init__(
        self,
        client: redis.asyncio.Redis,
        stream: str,
        group: str,
        consumer: str,
        on_trimmed: OnTrimmed | None = None,
    ) -> None:
        self._client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self._on_trimmed = on_trimmed
        self._told_unsupported = False
        self._ready = False
        self._pending_done = False
        self._pending_after = "0"  # the newest pending entry read since the last rewind

    async def ensure_group(self) -> None:
        if self._ready:
            return
        try:
            await self._client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._ready = True

    async def read(self, count: int) -> list[Entry]:
        """Up to ``count`` entries: this consumer's pending ones first, then new ones. A pending entry
        trimmed from the stream since comes back with ``None`` fields (acknowledge it and move on)."""
        await self.ensure_group()
        if not self._pending_done:
            entries = await self._read_from(self._pending_after, count)
            if entries:
                self._pending_after = entries[-1][0].decode()
                return entries
            self._pending_done = True
        return await self._read_new(count)

    def rewind(self) -> None:
        """Makes the next read start again from this consumer's pending entries (and re-check the group)."""
        self._ready = False
        self._pending_done = False
        self._pending_after = "0"

    async def ack(self, ids: list[bytes]) -> None:
        if ids:
            await self._client.xack(self.stream, self.group, *ids)

    async def _read_from(self, start: str, count: int) -> list[Entry]:
        raw: Any = await self._client.xreadgroup(self.group, self.consumer, {self.stream: start}, count=count)
        return _entries(raw)

    async def _read_new(self, count: int) -> list[Entry]:
        """New entries (``>``), and the entries trimmed before them (see the module doc)."""
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.xinfo_stream(self.stream)
            pipe.xinfo_groups(self.stream)
            pipe.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=count)
            info, groups, raw = await pipe.execute()
        entries = _entries(raw)
        group = next((g for g in groups if _text(g.get("name")) == self.group), None)
        if info.get("entries-added") is None and not self._told_unsupported:
            self._told_unsupported = True
            _log.warning(
                "Redis before 7 does not count the entries added to %s: entries the data plane trims "
                "from it before the monitor reads them cannot be detected or counted",
                self.stream,
            )
        trimmed = 0 if group is None else trimmed_unread(info, group)
        if trimmed == 0:
            return entries
        # Counted before the group's counter is repaired: should the repair fail, a later gap may be
        # counted too high, whereas repairing first and failing to count would lose this one.
        if self._on_trimmed is not None:
            self._on_trimmed(trimmed)
        if _deleted_inside(info):
            return entries  # no position to repair the counter with
        # The group now stands at the stream's first entries: its position is the entries removed plus
        # those just read (Redis 7.0 counted only those delivered). Only this consumer reads the group.
        position = int(info["entries-added"]) - int(info.get("length", 0)) + len(entries)
        last = entries[-1][0] if entries else group["last-delivered-id"] if group is not None else b"0-0"
        await self._client.xgroup_setid(self.stream, self.group, last, entries_read=position)
        return entries


def _entries(raw: Any) -> list[Entry]:
    if not raw:
        return []
    _, entries = raw[0]
    return [(entry_id, fields or None) for entry_id, fields in entries]
