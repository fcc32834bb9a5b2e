"""Wakes every watch stream of this process when the registry changes through it."""

from __future__ import annotations

import asyncio
import contextlib


class ChangeSignal:
    """A broadcast "something changed" for asyncio tasks. A waiter takes the current :meth:`ticket`
    before it reads the state, then waits on it: a change made between the read and the wait still
    wakes it, because the ticket it holds is the event that change sets."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def ticket(self) -> asyncio.Event:
        return self._event

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    @staticmethod
    async def wait(ticket: asyncio.Event, timeout_s: float) -> None:
        """Returns when ``ticket`` is set or after ``timeout_s``, whichever comes first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ticket.wait(), timeout_s)
