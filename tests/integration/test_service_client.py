"""The behaviour every control-plane client inherits from ``ServiceClient``, against a real gRPC server on
127.0.0.1: the actor header and timeout go out on every call, failures come back as the matching
``clients.errors`` exception with the server's message, unary answers are type-checked, streams map
their errors too, and the context manager closes the channel."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from google.protobuf import wrappers_pb2

from clients.errors import AetherError, NotFound, Unavailable
from clients.sdk.auth import ChannelSecurity
from clients.sdk.service_client import ACTOR_METADATA_KEY, ServiceClient

SERVICE = "aether.test.Echo"


class EchoClient(ServiceClient):
    """A client of the test service below, built the way the SDK's clients are."""

    DEFAULT_TIMEOUT_S = 3.0

    def _open_stubs(self) -> None:
        self._echo = self._channel.unary_unary(
            f"/{SERVICE}/Echo",
            request_serializer=wrappers_pb2.StringValue.SerializeToString,
            response_deserializer=wrappers_pb2.StringValue.FromString,
        )
        self._count = self._channel.unary_stream(
            f"/{SERVICE}/Count",
            request_serializer=wrappers_pb2.Int32Value.SerializeToString,
            response_deserializer=wrappers_pb2.Int32Value.FromString,
        )

    def echo(self, text: str) -> wrappers_pb2.StringValue:
        return self._call(self._echo, wrappers_pb2.StringValue(value=text), wrappers_pb2.StringValue)

    def echo_expecting(self, text: str, response_type: type[Any]) -> Any:
        return self._call(self._echo, wrappers_pb2.StringValue(value=text), response_type)

    def count(self, up_to: int) -> Iterator[int]:
        for message in self._stream(self._count, wrappers_pb2.Int32Value(value=up_to), None):
            yield message.value


def _echo(request: wrappers_pb2.StringValue, context: grpc.ServicerContext) -> wrappers_pb2.StringValue:
    if request.value == "missing":
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing as 'missing'")
    metadata = dict(context.invocation_metadata())
    remaining = context.time_remaining()
    answer = f"{request.value}|actor={metadata.get(ACTOR_METADATA_KEY, '')}|deadline={remaining is not None}"
    return wrappers_pb2.StringValue(value=answer)


def _count(
    request: wrappers_pb2.Int32Value, context: grpc.ServicerContext
) -> Iterator[wrappers_pb2.Int32Value]:
    for i in range(request.value):
        yield wrappers_pb2.Int32Value(value=i)
    context.abort(grpc.StatusCode.UNAVAILABLE, "the stream ended early on purpose")


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Echo": grpc.unary_unary_rpc_method_handler(
                        _echo,
                        request_deserializer=wrappers_pb2.StringValue.FromString,
                        response_serializer=wrappers_pb2.StringValue.SerializeToString,
                    ),
                    "Count": grpc.unary_stream_rpc_method_handler(
                        _count,
                        request_deserializer=wrappers_pb2.Int32Value.FromString,
                        response_serializer=wrappers_pb2.Int32Value.SerializeToString,
                    ),
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def test_calls_carry_the_actor_and_a_deadline(target: str) -> None:
    with EchoClient(target, security=ChannelSecurity(), actor="alice") as client:
        assert client.echo("hi").value == "hi|actor=alice|deadline=True"
    with EchoClient(target, security=ChannelSecurity()) as anonymous:
        assert anonymous.echo("hi").value == "hi|actor=|deadline=True"


def test_the_timeout_defaults_to_the_clients_own(target: str) -> None:
    with EchoClient(target) as default, EchoClient(target, timeout=0.25) as given:
        assert (default.timeout, given.timeout) == (3.0, 0.25)


def test_a_client_must_say_which_service_it_calls() -> None:
    with pytest.raises(TypeError, match="abstract"):
        ServiceClient("127.0.0.1:1")  # type: ignore[abstract]


def test_a_failed_call_raises_the_matching_error_with_the_servers_message(target: str) -> None:
    with EchoClient(target) as client, pytest.raises(NotFound, match="no such thing as 'missing'"):
        client.echo("missing")


def test_an_answer_of_the_wrong_type_is_refused(target: str) -> None:
    with EchoClient(target) as client, pytest.raises(TypeError, match="expected Int32Value, got StringValue"):
        client.echo_expecting("hi", wrappers_pb2.Int32Value)


def test_a_stream_yields_its_messages_then_raises_the_mapped_error(target: str) -> None:
    seen: list[int] = []
    with EchoClient(target) as client, pytest.raises(Unavailable, match="ended early on purpose"):
        for value in client.count(3):
            seen.append(value)
    assert seen == [0, 1, 2]


def test_an_unreachable_server_is_unavailable_within_the_timeout() -> None:
    with EchoClient("127.0.0.1:1", timeout=0.5) as client, pytest.raises(AetherError) as raised:
        client.echo("hi")
    assert raised.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_leaving_the_context_closes_the_channel(target: str) -> None:
    with EchoClient(target) as client:
        client.echo("hi")
    with pytest.raises(ValueError, match="closed channel"):
        client.echo("hi")


def test_a_client_sharing_a_channel_keeps_the_actor_and_leaves_the_channel_open(target: str) -> None:
    """How one client reaches a second service of its server (the model registry's artifacts, a run's
    artifact upload): the channel (its token and TLS) and the actor are the first client's."""
    with EchoClient(target, security=ChannelSecurity(), actor="alice", timeout=1.0) as client:
        with client.sharing(EchoClient) as shared:
            assert shared.echo("hi").value == "hi|actor=alice|deadline=True"
            assert shared.timeout == EchoClient.DEFAULT_TIMEOUT_S  # its own default, not the first's
        assert client.echo("again").value == "again|actor=alice|deadline=True"  # still open
    with pytest.raises(ValueError, match="closed channel"):
        shared.echo("hi")  # closed with the client that owns it
    with pytest.raises(ValueError, match="security applies to a channel the client opens"):
        EchoClient(target, security=ChannelSecurity(), channel=client._channel)


def test_the_data_plane_clients_spread_calls_over_every_address_of_their_target() -> None:
    """A fleet target (``ipv4:A,B``, clients.sdk.fleet) or a DNS name of several replicas: the SDK's data-
    plane clients use round robin (with gRPC's default, pick_first, every call went to the first)."""
    from clients.inference import grpc_predict_v2_pb2 as oip
    from clients.inference import grpc_predict_v2_pb2_grpc as oip_grpc
    from clients.sdk.inference import InferenceClient

    calls: list[int] = []

    class Ready(oip_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
        def __init__(self, number: int) -> None:
            self.number = number

        def ModelReady(self, request: oip.ModelReadyRequest, context: Any) -> oip.ModelReadyResponse:
            calls.append(self.number)
            return oip.ModelReadyResponse(ready=True)

    servers, ports = [], []
    for number in range(2):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        oip_grpc.add_GRPCInferenceServiceServicer_to_server(Ready(number), server)  # type: ignore[no-untyped-call]
        ports.append(server.add_insecure_port("127.0.0.1:0"))
        server.start()
        servers.append(server)
    try:
        with InferenceClient(f"ipv4:127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}") as client:
            for _ in range(20):
                assert client.model_ready("m")
    finally:
        for server in servers:
            server.stop(None)
    assert calls.count(0) >= 5 and calls.count(1) >= 5, calls
