"""Registering services on a grpc.aio server through generic handlers only, for both planes.

The generated ``add_…Servicer_to_server`` functions (grpcio-tools 1.62 and later), and those of the
health and reflection packages, register every method twice: as a generic handler, and as a "registered
method" of gRPC core. On grpc.aio (1.85) each registered method keeps a request of its own pending, and
the server's main loop waits on all of them with one ``asyncio.wait`` for every incoming call, so each
call costs time in proportion to the number of methods the server has: measured here (uvloop), one such
wait costs ~7 µs with one pending request, ~16 µs with 15 and ~33 µs with 40. The data plane serves 13
methods, the control plane 87. A generic handler is found by a dict lookup per service instead. So both
planes pass a :class:`GenericHandlersOnly` to those functions in place of the server; it forwards the
generic handlers and drops the registered-method copies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import grpc
import grpc.aio
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc


class HandlerRegistry(Protocol):
    """What registering a service needs of a server (a ``grpc.aio.Server`` is one)."""

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]) -> None: ...

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None: ...


class GenericHandlersOnly:
    """Stands in for ``server`` where services register: generic handlers reach it, registered methods
    do not (see the module's docstring). ``dropped`` names the methods that were not registered with
    gRPC core; they are served through their generic handlers all the same."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self.server = server
        self.dropped: list[str] = []

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.server.add_generic_rpc_handlers(generic_rpc_handlers)

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        self.dropped += (f"/{service_name}/{method}" for method in method_handlers)


def enable_reflection(registry: HandlerRegistry, service_names: Iterable[str]) -> None:
    """Server reflection for grpc.aio (``reflection.enable_server_reflection`` picks the servicer by the
    server's class, which a :class:`GenericHandlersOnly` is not)."""
    names = (*service_names, reflection.SERVICE_NAME)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        reflection.aio.ReflectionServicer(names), registry
    )
