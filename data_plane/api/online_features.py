"""gRPC servicer of ``aether.v1.OnlineFeatures``.

The method returns the response already serialized (``data_plane.wire``), so it is registered through a
generic handler whose response serializer is the identity; requests are parsed by the generated class.
Reflection still describes the service from the generated descriptors.
"""

from __future__ import annotations

from typing import Any

import grpc
import grpc.aio

from clients.aether.v1 import online_features_pb2
from clients.errors import maps_errors
from data_plane import wire
from data_plane.reader import OnlineReader

SERVICE_NAME: str = online_features_pb2.DESCRIPTOR.services_by_name["OnlineFeatures"].full_name


class OnlineFeaturesServicer:
    def __init__(self, reader: OnlineReader) -> None:
        self._reader = reader

    @maps_errors
    async def GetOnlineFeatures(
        self,
        request: online_features_pb2.GetOnlineFeaturesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> bytes:
        result = await self._reader.read(
            request.features, [row.keys for row in request.rows], context.time_remaining()
        )
        return wire.encode_response(
            result.row_count,
            [(b.plan.wire_prefix, b.values, b.statuses, b.event_timestamps_us) for b in result.blocks],
        )


def add_to_server(servicer: OnlineFeaturesServicer, server: grpc.aio.Server) -> None:
    handler = grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "GetOnlineFeatures": grpc.unary_unary_rpc_method_handler(
                servicer.GetOnlineFeatures,
                request_deserializer=online_features_pb2.GetOnlineFeaturesRequest.FromString,
                response_serializer=None,  # the servicer returns wire bytes
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
