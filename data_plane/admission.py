"""The admission gate in front of the inference APIs.

It counts the requests in flight (exported as ``aether_inference_in_flight``, what the autoscaler reads as
queue depth) and, once the server drains (SIGTERM), refuses new requests with UNAVAILABLE before they
touch anything, so that a client retries them elsewhere, while those already admitted run to the end: a
request is either refused up front or answered, never accepted and then dropped."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from clients.errors import Unavailable


@dataclass(frozen=True, slots=True)
class DrainStart:
    """The moment the gate closed, and the admitted requests it still held then."""

    at: float  # time.monotonic()
    in_flight: int


class Admission:
    """Requests in flight, and the drain: once :meth:`drain` began, :meth:`enter` refuses."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.draining = False
        self.last_arrival = 0.0  # time.monotonic() of the latest request, admitted or refused
        self._idle: asyncio.Event | None = None  # made by drain(); set when the last request leaves
        self.drain_started: DrainStart | None = None  # set once, when drain() first closes the gate

    def enter(self, requests: int = 1) -> None:
        self.last_arrival = time.monotonic()
        if self.draining:
            raise Unavailable("this data plane is shutting down and accepts no new requests: retry elsewhere")
        self.in_flight += requests

    def leave(self, requests: int = 1) -> None:
        self.in_flight -= requests
        if self.in_flight == 0 and self._idle is not None:
            self._idle.set()

    def close(self) -> DrainStart:
        """Refuses new requests from now on; what it held when it first closed."""
        if self.drain_started is None:
            self.drain_started = DrainStart(time.monotonic(), self.in_flight)
        self.draining = True
        return self.drain_started

    async def drain(self, timeout_s: float | None) -> bool:
        """Refuses new requests from now on (:meth:`close`) and waits (up to ``timeout_s``) for the
        admitted ones; True when they all finished."""
        self.close()
        if self.in_flight == 0:
            return True
        if self._idle is None:
            self._idle = asyncio.Event()
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def quiet(self, quiet_s: float, timeout_s: float) -> bool:
        """Waits (up to ``timeout_s``) until no request arrived for ``quiet_s``: callers refused during the
        drain have gone elsewhere. Stopping the transport before that would cancel requests that are on
        the wire (the caller would see CANCELLED, not the refusal it can retry on)."""
        deadline = time.monotonic() + timeout_s
        while (idle := time.monotonic() - self.last_arrival) < quiet_s:
            if time.monotonic() + quiet_s - idle > deadline:
                return False
            await asyncio.sleep(quiet_s - idle)
        return True
