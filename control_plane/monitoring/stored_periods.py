"""After a start, the periods already reported of each version the monitor reads rows of again.

A time window is reported once its period is over, and a late row of it is dropped (``late``) for as long
as the monitor remembers the end of the newest window it closed (:mod:`.windows`, :mod:`.versions`). A
restart forgot that: the windows start empty, so a late row of a period reported before the restart
opened that period again, and the clock closed it at once, a second report of the same period. So the
first time a version is seen after the start, with time windows configured, the end of its newest stored
report of that window length is read back (:func:`.reports.newest_period_end`) and its windows start
from it. The entries of the window open at the stop are pending and read again: their period was not
reported, so they are not late. One read per version in this process (a database failure fails the tick,
which is read again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.monitoring.reports import newest_period_end
from control_plane.monitoring.scoring import Key
from control_plane.monitoring.versions import Versions


class StoredPeriods:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        versions: Versions,
        config: Callable[[str], pb.MonitorConfig],
    ) -> None:
        self._sessions = sessions
        self._versions = versions
        self._config = config
        self._read: set[Key] = set()

    async def recall(self, keys: Iterable[Key]) -> None:
        """Reads back, for each of ``keys`` not seen since the start and cut in time windows, the end of
        its newest stored period, which its windows will treat as closed."""
        for key in set(keys):
            if key in self._read:
                continue
            if self._versions.get(key) is not None:  # its windows in memory know their own periods
                self._read.add(key)
                continue
            config = self._config(key[0])
            if config.window_kind != pb.WINDOW_KIND_TIME:
                continue
            width_us = max(1, round(config.window_seconds * 1e6))
            end = await asyncio.to_thread(newest_period_end, self._sessions, *key, width_us)
            self._read.add(key)
            if end is not None:
                self._versions.remember_closed(key, end)
