"""Registering a servicer on the grpc.aio server, as the generated ``add_…Servicer_to_server`` functions
do, except that the methods named as answering bytes have an identity response serializer: their handlers
return the response already serialized (``oip_tensors.encode_response``, ``predict.encode_response``),
and that the methods are not also registered with gRPC core, which costs every call time (see
:mod:`clients.server_handlers`)."""

from __future__ import annotations

from collections.abc import Collection
from types import ModuleType
from typing import Any

import grpc
import grpc.aio


def add_service(
    server: grpc.aio.Server,
    servicer: Any,
    messages: ModuleType,
    service: str,
    answers_bytes: Collection[str] = (),
) -> None:
    """Registers every (unary) method of ``service`` (its short name in the ``messages`` ``_pb2`` module)
    to ``servicer``'s method of the same name."""
    descriptor = messages.DESCRIPTOR.services_by_name[service]
    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=getattr(messages, method.input_type.name).FromString,
            response_serializer=(
                None
                if method.name in answers_bytes
                else getattr(messages, method.output_type.name).SerializeToString
            ),
        )
        for method in descriptor.methods
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(descriptor.full_name, handlers),))
