"""A background loop in the server's event loop that stops for certain.

Cancelling the task is not enough: a library may swallow the ``CancelledError``. redis-py 8.0–8.2 does
so now and then when it arrives during a command (measured: a task looping over ``XREADGROUP`` ignored
``task.cancel()`` in 73–82 of 100 tries; redis-py 7.4 in none), and a loop that lost its cancellation
runs on after ``stop()``, which then waits forever: the control plane's shutdown hung that way. So
:meth:`BackgroundLoop.stop` also sets a flag that the loop checks between passes, and the pause between
passes (:meth:`BackgroundLoop.pause`) ends as soon as the flag is set. A stop therefore takes at most
the pass in progress.

Usage::

    self._background = BackgroundLoop("drift-monitor")
    self._background.start(self._run())          # _run: while self._background.running: ...; await pause

    await self._background.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

import redis.exceptions
import sqlalchemy.exc

#: Failures of the database or Redis being unreachable, locked or timing out: a background loop retries
#: them on its next pass (the drift monitor for as long as they last, the retraining loop a bounded
#: number of times), where any other error would recur every pass.
TRANSIENT_FAILURES: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
)


class BackgroundLoop:
    def __init__(self, name: str) -> None:
        self.name = name
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """False once :meth:`stop` was called: the loop should end its pass and return."""
        return not self._stopping.is_set()

    def start(self, body: Coroutine[Any, Any, None]) -> None:
        self._stopping.clear()
        self._task = asyncio.get_running_loop().create_task(body, name=self.name)

    async def pause(self, seconds: float) -> None:
        """Sleeps ``seconds``, or less when :meth:`stop` is called meanwhile."""
        # A timeout that fires as a cancellation arrives may turn the cancellation into TimeoutError
        # (Python 3.11), which this swallows: the flag, set before any cancellation, still ends the loop.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    async def stop(self) -> None:
        """Sets the flag, cancels the task and waits for it to end. Stopping twice is harmless."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # stop() itself was cancelled, not only the loop
