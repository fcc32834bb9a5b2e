"""Services registered through ``clients.server_handlers`` on a real grpc.aio server: served through
their generic handlers, with no method registered with gRPC core (each one would cost every call)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc.aio
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from clients.server_handlers import GenericHandlersOnly, enable_reflection
from tests.support.grpc_core import pending_registered_method_requests

pytestmark = pytest.mark.integration


async def _started(server: grpc.aio.Server) -> str:
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await asyncio.sleep(0)  # the server's main loop issues its requests for calls on its first turn
    return f"127.0.0.1:{port}"


@pytest.fixture
async def server() -> AsyncIterator[grpc.aio.Server]:
    server = grpc.aio.server()
    yield server
    await server.stop(None)


async def test_the_generated_registration_alone_keeps_a_pending_request_per_method(
    server: grpc.aio.Server,
) -> None:
    # The cost clients.server_handlers avoids, shown on the same probe the other tests rely on.
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    await _started(server)
    assert pending_registered_method_requests() == 3  # Check, List, Watch


async def test_services_answer_through_generic_handlers_with_nothing_registered_in_core(
    server: grpc.aio.Server,
) -> None:
    handlers = GenericHandlersOnly(server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), handlers)
    enable_reflection(handlers, [health.SERVICE_NAME])
    address = await _started(server)

    assert pending_registered_method_requests() == 0
    assert handlers.dropped == [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/List",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ]
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        answers = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = [s.name async for answer in answers for s in answer.list_services_response.service]
    assert sorted(names) == ["grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"]
