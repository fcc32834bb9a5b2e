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
"""

from __future__ import annotations

from typing import Any

import redis.asyncio
from redis.exceptions import ResponseError

Entry = tuple[bytes, dict[bytes, bytes] | None]


def entry_order(entry_id: bytes) -> tuple[int, int]:
    """``(milliseconds, sequence)`` of a stream entry id: ids of one stream grow in this order."""
    millis, _, sequence = entry_id.partition(b"-")
    return int(millis), int(sequence or b"0")


class StreamReader:
    def __init__(self, client: redis.asyncio.Redis, stream: str, group: str, consumer: str) -> None:
        self._client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
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
        return await self._read_from(">", count)

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
        if not raw:
            return []
        _, entries = raw[0]
        return [(entry_id, fields or None) for entry_id, fields in entries]
