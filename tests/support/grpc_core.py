"""Probes of grpc.aio servers running on the test's event loop."""

from __future__ import annotations

import asyncio

# The coroutine a grpc.aio server (1.85) keeps pending per method registered with gRPC core; its main loop
# waits on all of them for every incoming call (clients.server_handlers).
_REGISTERED_CALL_REQUEST = "AioServer._request_registered_call"


def pending_registered_method_requests() -> int:
    """How many requests for calls to registered methods the grpc.aio servers on this loop hold."""
    return sum(
        getattr(task.get_coro(), "__qualname__", "") == _REGISTERED_CALL_REQUEST
        for task in asyncio.all_tasks()
    )
