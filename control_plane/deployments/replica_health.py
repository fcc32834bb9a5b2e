"""The replica manager's question to a replica's gRPC health service (the overall service ""): is it
SERVING yet (:func:`wait_serving`, before it is listed). A replica inherits this process's
environment, TLS certificate and token included, so the probe goes through the same channel helper as
every other client of it."""

from __future__ import annotations

import asyncio

import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.sdk.auth import open_aio_channel


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
