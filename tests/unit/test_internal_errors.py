"""An unexpected error in a servicer method reaches its caller as INTERNAL with its type and the first
line of its text; the rest (a database error's SQL and bound values) stays in the server's log. Through a
real grpc.aio server on 127.0.0.1."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
import sqlalchemy.exc

from clients.errors import INTERNAL_DETAIL_CHARS, NotFound, internal_message, maps_errors

SQL = "INSERT INTO tracking_log_senders (sender_id) VALUES (%(sender_id)s)"
SECRET_VALUE = "another-callers-value"


def database_error() -> sqlalchemy.exc.DataError:
    return sqlalchemy.exc.DataError(
        SQL, {"sender_id": SECRET_VALUE}, Exception("value too long for type character varying(64)")
    )


class Servicer:
    @maps_errors
    async def Fails(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        raise database_error()

    @maps_errors
    async def Missing(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        raise NotFound("no such thing")


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    servicer = Servicer()
    server = grpc.aio.server()
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(getattr(servicer, name)) for name in ("Fails", "Missing")
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Errors", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as opened:
        yield opened
    await server.stop(None)


async def test_the_caller_gets_the_errors_first_line_and_the_log_gets_all_of_it(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await channel.unary_unary("/test.Errors/Fails")(b"")
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    details = failed.value.details() or ""
    assert details.startswith("internal error in Servicer.Fails: DataError: ")
    assert "value too long" in details
    assert SQL not in details and SECRET_VALUE not in details
    assert SQL in caplog.text and SECRET_VALUE in caplog.text  # the server's log keeps everything
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await channel.unary_unary("/test.Errors/Missing")(b"")
    assert (missing.value.code(), missing.value.details()) == (grpc.StatusCode.NOT_FOUND, "no such thing")


def test_a_long_first_line_is_cut() -> None:
    message = internal_message("M", ValueError("x" * 10_000))
    assert message == f"internal error in M: ValueError: {'x' * INTERNAL_DETAIL_CHARS}…"
