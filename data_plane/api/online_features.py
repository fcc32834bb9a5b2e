"""gRPC servicer of ``aether.v1.OnlineFeatures``.

The method takes the request as bytes and returns the response already serialized (``data_plane.wire``),
so it is registered through a generic handler with identity (de)serializers. Reflection still describes
the service from the generated descriptors.

Why bytes in: a request repeats the same (up to thousands of) references on every call, and building
their Python strings cost more than the rest of the read (~0.1 ms at 1,000). :func:`split_request` finds
the serialized run of references (:func:`kernels.wire_scan.leading_run`) and parses only the rows; the
catalog caches plans by those bytes. A request whose references are not one leading run (any valid
serializer may interleave fields) is parsed whole, with the same result.

A client sends the same references call after call, so :class:`RequestSplitter` first checks whether the
request starts with the previous request's run (one ``startswith``) before it scans: the scan and the
new key's hash (kilobytes at 1,000 references) are then skipped, and the plan cache is hit with the very
bytes object it already holds.
"""

from __future__ import annotations

from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from clients.aether.v1 import online_features_pb2
from clients.errors import InvalidArgument, maps_errors
from data_plane import wire
from data_plane.api.outcomes import too_large
from data_plane.one_row import one_row_response
from data_plane.reader import OnlineReader, ReadResult, assemble
from data_plane.settings import MAX_MESSAGE_BYTES
from kernels.wire_scan import leading_run

SERVICE_NAME: str = online_features_pb2.DESCRIPTOR.services_by_name["OnlineFeatures"].full_name
_Request = online_features_pb2.GetOnlineFeaturesRequest
_FEATURES_FIELD = _Request.DESCRIPTOR.fields_by_name["features"].number


def split_request(data: bytes) -> tuple[bytes, int, online_features_pb2.GetOnlineFeaturesRequest]:
    """``(features_wire, ref_count, message)``: the serialized run of references that starts ``data`` and
    their count, with ``message`` parsed from the rest (its rows); or ``(b"", 0, the whole message)``
    when the references are not one leading run. Malformed bytes raise protobuf's DecodeError."""
    end, count = leading_run(data, _FEATURES_FIELD)
    if end > 0:
        rest = _Request.FromString(data[end:])
        if not rest.features:  # otherwise more references follow other fields: take the slow path
            return data[:end], count, rest
    return b"", 0, _Request.FromString(data)


_FEATURES_TAG = bytes([(_FEATURES_FIELD << 3) | 2])  # one byte: field 1, length-delimited


class RequestSplitter:
    """:func:`split_request` with a memo of the last run of references it found.

    If ``data`` starts with that run and the next byte does not start another reference, the run of
    ``data`` is exactly that run: entries are parsed from the start, and the run's entries are complete.
    The answer is then the same as ``split_request(data)``'s (a property test holds them equal)."""

    def __init__(self) -> None:
        self._last: tuple[bytes, int] = (b"", 0)

    def split(self, data: bytes) -> tuple[bytes, int, online_features_pb2.GetOnlineFeaturesRequest]:
        run, count = self._last
        end = len(run)
        if end and data.startswith(run) and data[end : end + 1] != _FEATURES_TAG:
            rest = _Request.FromString(data[end:])
            if not rest.features:  # else more references follow the rows: split_request's slow path
                return run, count, rest
        features_wire, count, message = split_request(data)
        if features_wire:
            self._last = (features_wire, count)
        return features_wire, count, message


class OnlineFeaturesServicer:
    def __init__(self, reader: OnlineReader, *, max_send_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._reader = reader
        self._splitter = RequestSplitter()
        # gRPC refuses a larger answer only after the handler, with a generic message (outcomes.py).
        self._max_send_bytes = max_send_bytes

    @maps_errors
    async def GetOnlineFeatures(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        try:
            features_wire, ref_count, message = self._splitter.split(request)
        except DecodeError as exc:
            raise InvalidArgument(f"malformed GetOnlineFeaturesRequest: {exc}") from None
        rows = [row.keys for row in message.rows]
        time_remaining_s = context.time_remaining()
        if not features_wire:
            response = _encode(await self._reader.read(message.features, rows, time_remaining_s))
        else:
            fetched = await self._reader.fetch_wire(features_wire, ref_count, rows, time_remaining_s)
            response = one_row_response(fetched) or _encode(assemble(fetched))
        if len(response) > self._max_send_bytes:
            raise too_large(len(response), self._max_send_bytes)
        return response


def _encode(result: ReadResult) -> bytes:
    return wire.encode_response(
        result.row_count,
        [(b.plan.wire_prefix, b.values, b.statuses, b.event_timestamps_us) for b in result.blocks],
    )


def add_to_server(servicer: OnlineFeaturesServicer, server: grpc.aio.Server) -> None:
    split_request(b"\n\x00")  # loads the compiled scan kernel now, not on the first request
    handler = grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "GetOnlineFeatures": grpc.unary_unary_rpc_method_handler(
                servicer.GetOnlineFeatures,
                request_deserializer=None,  # the servicer parses what it needs (split_request)
                response_serializer=None,  # the servicer returns wire bytes
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
