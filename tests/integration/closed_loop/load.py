"""A bounded closed-loop load generator for the tests: ``clients`` concurrent callers, each sending its next
Predict as soon as the previous one is answered, until told to stop, a request budget is spent or a time
limit passes (whichever comes first). Every request's outcome is kept."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import grpc.aio

from clients.aether.v1 import inference_pb2_grpc as pb_grpc
from clients.sdk.inference import build_predict_request

DRIVERS = 64


@dataclass(frozen=True, slots=True)
class Outcome:
    request_id: str
    sent_at: float  # time.monotonic()
    done_at: float
    code: grpc.StatusCode
    variant: str = ""
    version: int = 0
    details: str = ""  # a failed call's status message


@dataclass
class LoadResult:
    outcomes: list[Outcome] = field(default_factory=list)

    def codes(self) -> set[grpc.StatusCode]:
        return {o.code for o in self.outcomes}

    def failures(self) -> list[str]:
        """Each failed call's status and message (what a test says when it expected none)."""
        return [f"{o.code.name}: {o.details}" for o in self.outcomes if o.code != grpc.StatusCode.OK]

    def served_by(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for outcome in self.outcomes:
            if outcome.code == grpc.StatusCode.OK:
                counts[outcome.variant] = counts.get(outcome.variant, 0) + 1
        return counts


async def closed_loop(
    target: str,
    deployment: str,
    *,
    clients: int = 4,
    max_requests: int = 20_000,
    max_seconds: float = 20.0,
    stop: Callable[[], Awaitable[bool]] | None = None,
    poll_s: float = 0.1,
    timeout_s: float = 10.0,
    tag: str = "r",
) -> LoadResult:
    """Runs the load; ``stop`` is polled every ``poll_s`` and ends it when it answers True."""
    result = LoadResult()
    numbers = itertools.count()
    finished = asyncio.Event()
    deadline = time.monotonic() + max_seconds

    async def caller(channel: grpc.aio.Channel) -> None:
        stub = pb_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]
        while not finished.is_set() and time.monotonic() < deadline:
            number = next(numbers)
            if number >= max_requests:
                return
            request_id = f"{tag}{number}"
            request = build_predict_request(
                deployment,
                [{"driver_id": number % DRIVERS}],
                routing_key=f"user-{number}",
                request_id=request_id,
            )
            sent = time.monotonic()
            try:
                response = await stub.Predict(request, timeout=timeout_s)
            except grpc.aio.AioRpcError as error:
                done = time.monotonic()
                result.outcomes.append(
                    Outcome(request_id, sent, done, error.code(), details=error.details() or "")
                )
                continue
            result.outcomes.append(
                Outcome(
                    request_id,
                    sent,
                    time.monotonic(),
                    grpc.StatusCode.OK,
                    response.variant,
                    response.model_version,
                )
            )

    async def watcher() -> None:
        while not finished.is_set() and time.monotonic() < deadline:
            if stop is not None and await stop():
                break
            await asyncio.sleep(poll_s)
        finished.set()

    async with grpc.aio.insecure_channel(target) as channel:
        watching = asyncio.create_task(watcher())
        await asyncio.gather(*(caller(channel) for _ in range(clients)))
        finished.set()
        await watching
    return result
