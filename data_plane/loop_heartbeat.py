"""Whether the serving event loop still turns, told to whoever scrapes ``/metrics``.

A data plane's ``/metrics`` is served by a thread of its own, so it answers while the event loop, which
serves every gRPC call, is hung (a blocking call in a handler, a deadlock, a wedged C extension): its
gauges frozen, the replica read as idle, and the autoscaler's scale-down stopped a healthy replica in its
place. The loop stamps :class:`LoopHeartbeat` every :data:`PERIOD_S`; the metrics thread exports its age
as ``aether_event_loop_heartbeat_age_seconds``, computed when scraped, so a hung loop shows as an age
that grows while the scrape still answers (:mod:`control_plane.deployments.autoscale_loop` judges it).
About :data:`PERIOD_S` or less on a loop that turns; a loop busy with one long callback shows that
callback's length too, which is what a client waiting on it sees.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

#: How often the loop stamps the heartbeat: a healthy loop's age stays below this (plus its lag).
PERIOD_S = 0.5


class LoopHeartbeat:
    def __init__(self, period_s: float = PERIOD_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._period_s = period_s
        self._clock = clock
        self._last = clock()
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Starts stamping, on the running loop (a timer callback, not a task: nothing to await)."""
        self._beat()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def age_s(self) -> float:
        """Seconds since the loop last stamped; read from any thread (a float read is atomic)."""
        return max(self._clock() - self._last, 0.0)

    def _beat(self) -> None:
        self._last = self._clock()
        self._handle = asyncio.get_running_loop().call_later(self._period_s, self._beat)
