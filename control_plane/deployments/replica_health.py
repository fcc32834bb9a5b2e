"""The replica manager's two questions to a replica's gRPC health service (the overall service ""):
is it SERVING yet (:func:`wait_serving`, before it is listed), and does it answer at all
(:func:`answers`, each autoscaler pass, to find a hung one). A replica inherits this process's
environment, TLS certificate and token included, so both probes go through the same channel helper as
every other client of it."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.sdk.auth import open_aio_channel

#: What a probe gets from a replica that did not answer: its deadline passed (a stopped process, a
#: wedged event loop: the kernel accepts the connection, nobody reads it), or no connection came up.
#: Any other outcome, NOT_SERVING or an error status included, is an answer.
NO_ANSWER = frozenset({grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE})


async def wait_serving(address: str, poll_s: float = 0.05) -> None:
    """Returns once the replica's overall health is SERVING (its plans and models are ready)."""
    async with open_aio_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                answer = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(poll_s)


async def answers(address: str, timeout_s: float) -> bool:
    """Whether the replica's health service answers within ``timeout_s``, whatever it says: a draining
    replica's NOT_SERVING is an answer (it is leaving, not hung)."""
    async with open_aio_channel(address) as channel:
        try:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as error:
            return error.code() not in NO_ANSWER
    return True
