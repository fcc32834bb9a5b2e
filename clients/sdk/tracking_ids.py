"""Run ids for :meth:`TrackingClient.start_run`: random (version 4) UUIDs as 32 hex digits, drawn from
the operating system 256 at a time.

Why not ``uuid.uuid4()`` per run: each call is an ``os.urandom`` syscall that releases the GIL for a
moment. CPython hands the GIL to a waiting thread only after 5 ms in which the holder never released it,
so a sweep starting runs every millisecond or so keeps the shipper thread from ever getting it: measured,
building one 50,000-point request took 500 ms instead of 13 ms, and nothing was sent until the loop ended.
One syscall per 256 runs leaves the usual 50/50 sharing in place."""

from __future__ import annotations

import os
import uuid

_BATCH = 256
_UUID_BYTES = 16


class RunIds:
    """Hands out distinct random ids; safe to share between threads (``list.pop`` is atomic) and across
    ``fork`` (a child drops the ids its parent drew, so the two never hand out the same one)."""

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._pid = os.getpid()

    def next(self) -> str:
        if self._pid != os.getpid():
            self._ids, self._pid = [], os.getpid()
        try:
            return self._ids.pop()
        except IndexError:
            pool = os.urandom(_BATCH * _UUID_BYTES)
            drawn = [
                uuid.UUID(bytes=pool[start : start + _UUID_BYTES], version=4).hex
                for start in range(0, len(pool), _UUID_BYTES)
            ]
            self._ids = drawn[1:]
            return drawn[0]
