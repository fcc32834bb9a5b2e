"""Registering a servicer on the grpc.aio server, as the generated ``add_…Servicer_to_server`` functions
do, except that:

* the methods named as answering bytes have an identity response serializer: their handlers return the
  response already serialized (``oip_tensors.encode_response``, ``predict.encode_response``);
* requests reach the handlers as bytes and are parsed in Python: a request gRPC's deserializer cannot
  parse is answered UNKNOWN ("Unexpected <class 'google.protobuf.message.DecodeError'>") before any
  handler runs, so it could be neither answered INVALID_ARGUMENT nor counted. The methods named as parsing
  bytes parse the request themselves (ModelInfer, Predict and PredictBatch, which count it;
  :func:`not_parsed`); every other method is wrapped in a parse that answers INVALID_ARGUMENT. Either way
  one ``FromString`` call, as gRPC's deserializer made;
* the methods are not also registered with gRPC core, which costs every call time (see
  :mod:`clients.server_handlers`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from types import ModuleType
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import DecodeError, Message

from clients.errors import InvalidArgument, abort

M = TypeVar("M", bound=Message)


def not_parsed(message_type: type[Message], error: DecodeError) -> InvalidArgument:
    """The error for a request that does not parse as ``message_type``."""
    return InvalidArgument(f"request is not a valid {message_type.DESCRIPTOR.name}: {error}")


def parse(message_type: type[M], data: bytes) -> M:
    """``data`` parsed as ``message_type``; INVALID_ARGUMENT saying why when it does not parse."""
    try:
        return message_type.FromString(data)
    except DecodeError as exc:
        raise not_parsed(message_type, exc) from None


def _parsing(
    behavior: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]], message_type: type[Message]
) -> Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
    async def parse_then_call(data: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            request = parse(message_type, data)
        except InvalidArgument as exc:
            await abort(context, exc.code, exc.message)
        return await behavior(request, context)

    return parse_then_call


def add_service(
    server: grpc.aio.Server,
    servicer: Any,
    messages: ModuleType,
    service: str,
    answers_bytes: Collection[str] = (),
    parses_bytes: Collection[str] = (),
) -> None:
    """Registers every (unary) method of ``service`` (its short name in the ``messages`` ``_pb2`` module)
    to ``servicer``'s method of the same name. Those in ``parses_bytes`` get the request as bytes."""
    descriptor = messages.DESCRIPTOR.services_by_name[service]
    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(
            (
                getattr(servicer, method.name)
                if method.name in parses_bytes
                else _parsing(getattr(servicer, method.name), getattr(messages, method.input_type.name))
            ),
            request_deserializer=None,  # bytes in: see the module's docstring
            response_serializer=(
                None
                if method.name in answers_bytes
                else getattr(messages, method.output_type.name).SerializeToString
            ),
        )
        for method in descriptor.methods
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(descriptor.full_name, handlers),))
