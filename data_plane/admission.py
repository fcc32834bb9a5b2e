"""The admission gate in front of the inference APIs.

It counts the requests in flight (exported as ``aether_inference_in_flight``, what the autoscaler reads as
queue depth) and, once the server drains (SIGTERM), refuses new requests with UNAVAILABLE before they
touch anything, so that a client retries them elsewhere, while those already admitted run to the end: a
request is either refused up front or answered, never accepted and then dropped."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from clients.errors import Unavailable


class Admission:
    """Requests in flight, and the drain: once :meth:`drain` began, :meth:`enter` refuses."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.draining = False
        self.last_arrival = 0.0  # time.monotonic() of the latest request, admitted or refused
        self._idle: asyncio.Event | None = None  # made by drain(); set when the last request leaves

    def enter(self, requests: int = 1) -> None:
        self.last_arrival = time.monotonic()
        if self.draining:
            raise Unavailable("this data plane is shutting down and accepts no new requests: retry elsewhere")
        self.in_flight += requests

    def leave(self, requests: int = 1) -> None:
        self.in_flight -= requests
        if self.in_flight == 0 and self._idle is not None:
            self._idle.set()

    async def drain(self, timeout_s: float | None) -> bool:
        """Refuses new requests from now on and waits (up to ``timeout_s``) for the admitted ones; True
        when they all finished."""
        self.draining = True
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


class OpenCalls:
    """The inference calls (ModelInfer, Predict) the server has open, each from its handler's start until
    gRPC ends it (its answer sent, or it failed or was cancelled); one object per server, shared by both
    APIs. It tells the batchers whether a request is alone (:attr:`others`): a request arriving while no
    other call is open runs at once, and one arriving while others are being served waits, up to its
    model's queue delay, to batch with the requests their callers send next. Counting until the end of
    the call, not of the handler, is what tells the two apart: with one caller in a closed loop (the
    previous call is over before the next one arrives) the count is one, and with several it is not, even
    though the event loop runs their handlers one after another."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def open(self, context: Any) -> None:
        """Counts a call until gRPC ends it (``context``: its ``grpc.aio.ServicerContext``)."""
        self.count += 1
        context.add_done_callback(self._closed)

    def _closed(self, _context: object) -> None:
        self.count -= 1

    @property
    def others(self) -> bool:
        """Whether calls other than the caller's own are open."""
        return self.count > 1
