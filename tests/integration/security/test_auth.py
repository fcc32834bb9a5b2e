"""Bearer-token auth on a real grpc.aio server: mutating RPCs need the admin token (none or a wrong one:
UNAUTHENTICATED; the read-only one: PERMISSION_DENIED), reads need either token, health needs none, and
the audit log records the token's principal, not what the caller claims to be."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.aether.v1 import audit_pb2 as apb
from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1.audit_pb2_grpc import AuditStub
from clients.aether.v1.feature_registry_pb2_grpc import FeatureRegistryStub
from clients.env_values import ConfigurationError
from clients.errors import PermissionDenied, Unauthenticated, from_rpc_error
from clients.sdk.audit import AuditClient
from clients.sdk.auth import ChannelSecurity, open_aio_channel, open_channel
from control_plane.api.auth import AuthInterceptor, AuthSettings
from control_plane.api.identity import actor_of
from tests.integration.security.conftest import ADMIN_TOKEN, GRANTS, READONLY_TOKEN, SecuredServer, serve
from tests.unit.control_plane.builders import entity

ECHO = "test.Echo"


async def _unary(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return actor_of(context).encode()


async def _server_stream(
    request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    for _ in range(2):
        yield actor_of(context).encode()


async def _client_stream(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
) -> bytes:
    count = len([request async for request in requests])
    return f"{actor_of(context)}:{count}".encode()


async def _bidi(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    async for request in requests:
        yield actor_of(context).encode() + b":" + request


#: One method per call shape, named so that two read and two write (by the naming convention).
ECHO_HANDLER = grpc.method_handlers_generic_handler(
    ECHO,
    {
        "GetUnary": grpc.unary_unary_rpc_method_handler(_unary),
        "ListServerStream": grpc.unary_stream_rpc_method_handler(_server_stream),
        "UploadClientStream": grpc.stream_unary_rpc_method_handler(_client_stream),
        "SyncBidi": grpc.stream_stream_rpc_method_handler(_bidi),
    },
)


@pytest.fixture
async def secured(db_url: str) -> AsyncIterator[SecuredServer]:
    async for server in serve(db_url, [AuthInterceptor(GRANTS)], tls=None, extra_handlers=[ECHO_HANDLER]):
        yield server


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call  # type: ignore[misc]
    code: grpc.StatusCode = failed.value.code()
    return code


async def test_writes_need_the_admin_token(secured: SecuredServer) -> None:
    async with grpc.aio.insecure_channel(secured.address) as channel:
        registry = FeatureRegistryStub(channel)  # type: ignore[no-untyped-call]
        create = pb.CreateEntityRequest(entity=entity())
        assert await _code(registry.CreateEntity(create)) == grpc.StatusCode.UNAUTHENTICATED
        assert (
            await _code(registry.CreateEntity(create, metadata=_bearer("guess")))
            == grpc.StatusCode.UNAUTHENTICATED
        )
        assert await _code(registry.CreateEntity(create, metadata=(("authorization", ADMIN_TOKEN),))) == (
            grpc.StatusCode.UNAUTHENTICATED  # not a bearer header
        )
        denied = registry.CreateEntity(create, metadata=_bearer(READONLY_TOKEN))
        assert await _code(denied) == grpc.StatusCode.PERMISSION_DENIED
        missing = registry.GetEntity(pb.GetEntityRequest(name="driver"), metadata=_bearer(ADMIN_TOKEN))
        assert await _code(missing) == grpc.StatusCode.NOT_FOUND  # nothing was written

        created = await registry.CreateEntity(create, metadata=_bearer(ADMIN_TOKEN))
        assert created.name == "driver"


async def test_reads_need_any_valid_token(secured: SecuredServer) -> None:
    async with grpc.aio.insecure_channel(secured.address) as channel:
        registry, audit = FeatureRegistryStub(channel), AuditStub(channel)  # type: ignore[no-untyped-call]
        await registry.CreateEntity(pb.CreateEntityRequest(entity=entity()), metadata=_bearer(ADMIN_TOKEN))
        listing = pb.ListEntitiesRequest()
        assert await _code(registry.ListEntities(listing)) == grpc.StatusCode.UNAUTHENTICATED
        assert await _code(registry.ListEntities(listing, metadata=_bearer("guess"))) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
        for token in (READONLY_TOKEN, ADMIN_TOKEN):
            found = await registry.ListEntities(listing, metadata=_bearer(token))
            assert [e.name for e in found.entities] == ["driver"]
            verified = await audit.VerifyAudit(apb.VerifyAuditRequest(), metadata=_bearer(token))
            assert verified.ok and verified.entries_checked == 1

        # Server-streaming reads: rejected before the first message without a token, served with one.
        export = audit.ExportAudit(apb.ExportAuditRequest())
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            _ = [chunk async for chunk in export]
        assert failed.value.code() == grpc.StatusCode.UNAUTHENTICATED
        watch = registry.WatchRegistry(pb.WatchRegistryRequest(), metadata=_bearer(READONLY_TOKEN))
        snapshot = await watch.read()
        assert [e.name for e in snapshot.entities] == ["driver"]
        watch.cancel()


async def test_health_is_open(secured: SecuredServer) -> None:
    async with grpc.aio.insecure_channel(secured.address) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_the_audit_log_records_the_token_principal_not_the_claimed_actor(
    secured: SecuredServer,
) -> None:
    async with grpc.aio.insecure_channel(secured.address) as channel:
        registry, audit = FeatureRegistryStub(channel), AuditStub(channel)  # type: ignore[no-untyped-call]
        claims = (*_bearer(ADMIN_TOKEN), ("x-aether-actor", "mallory"))
        await registry.CreateEntity(pb.CreateEntityRequest(entity=entity()), metadata=claims)
        page = await audit.QueryAudit(apb.QueryAuditRequest(), metadata=_bearer(READONLY_TOKEN))
        assert [(e.actor, e.action, e.object_id) for e in page.entries] == [("admin", "create", "driver")]


async def test_every_call_shape_is_checked_and_sees_its_principal(secured: SecuredServer) -> None:
    """Unary, server-, client- and bidirectional streaming: the interceptor rebuilds each handler."""
    security = {
        name: ChannelSecurity(token=token)
        for name, token in (("admin", ADMIN_TOKEN), ("readonly", READONLY_TOKEN))
    }
    for principal, channel_security in security.items():
        async with open_aio_channel(secured.address, channel_security) as channel:
            unary = await channel.unary_unary(f"/{ECHO}/GetUnary")(b"")
            streamed = [m async for m in channel.unary_stream(f"/{ECHO}/ListServerStream")(b"")]
            assert (unary, streamed) == (principal.encode(), [principal.encode()] * 2)
            upload = channel.stream_unary(f"/{ECHO}/UploadClientStream")
            bidi = channel.stream_stream(f"/{ECHO}/SyncBidi")
            if principal == "admin":
                assert await upload(iter([b"a", b"b", b"c"])) == b"admin:3"
                assert [m async for m in bidi(iter([b"x", b"y"]))] == [b"admin:x", b"admin:y"]
            else:
                # Opened without a request iterator: a message the client sends while the server's refusal
                # is on its way makes grpc's client replace that status with INTERNAL "Failed
                # execute_batch" (a client-side race, seen in CI), which says nothing of the server.
                for denied in (upload(), bidi()):
                    # (a handler let through would wait for the stream's end: bounded, so that fails too)
                    assert await asyncio.wait_for(denied.code(), 10) == grpc.StatusCode.PERMISSION_DENIED
    async with open_aio_channel(secured.address, ChannelSecurity()) as anonymous:
        assert await _code(anonymous.unary_unary(f"/{ECHO}/GetUnary")(b"")) == grpc.StatusCode.UNAUTHENTICATED


async def test_the_sync_sdk_sends_the_token(secured: SecuredServer) -> None:
    def verify_with(token: str | None) -> bool:
        with AuditClient(secured.address, security=ChannelSecurity(token=token)) as client:
            return client.verify().ok

    assert await asyncio.to_thread(verify_with, READONLY_TOKEN)
    with pytest.raises(Unauthenticated):
        await asyncio.to_thread(verify_with, None)

    def write_with_readonly() -> None:
        channel = open_channel(secured.address, ChannelSecurity(token=READONLY_TOKEN))
        try:
            FeatureRegistryStub(channel).CreateEntity(pb.CreateEntityRequest(entity=entity()), timeout=10)  # type: ignore[no-untyped-call]
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        finally:
            channel.close()

    with pytest.raises(PermissionDenied):
        await asyncio.to_thread(write_with_readonly)


async def test_a_token_file_saved_with_a_byte_order_mark_holds_the_same_token_on_both_sides(
    db_url: str, tmp_path: Path
) -> None:
    """Notepad saves UTF-8 with a BOM, which ``str.strip`` keeps: the SDK sent it (every call INTERNAL
    "Invalid metadata") and the server compared against it (no client could ever match)."""
    token_file = tmp_path / "token"
    token_file.write_text("\ufeff" + ADMIN_TOKEN + "\r\n", encoding="utf-8")
    settings = AuthSettings.from_env({"AETHER_ADMIN_TOKEN_FILE": str(token_file)})
    security = ChannelSecurity.from_env({"AETHER_TOKEN_FILE": str(token_file)})
    assert settings.admin_token == security.token == ADMIN_TOKEN

    def verify(address: str) -> bool:
        with AuditClient(address, security=security) as client:
            return client.verify().ok

    async for server in serve(db_url, settings.interceptors(), tls=None):
        assert await asyncio.to_thread(verify, server.address)


@pytest.mark.parametrize(
    ("token", "what"),
    [
        ("t\u00f6ken-secret", "a non-ASCII character at character 2"),
        ("abc\x01def-secret", "a control character at character 4"),
        ("first-secret\nsecond", "a line break"),
    ],
)
def test_a_token_no_header_can_carry_is_refused_naming_its_variable(
    tmp_path: Path, token: str, what: str
) -> None:
    """Such a token was accepted, then every call failed INTERNAL "Invalid metadata" after gRPC core's
    "Illegal header value" trace; the server, given one, could never be called."""
    token_file = tmp_path / "token"
    token_file.write_text(token, encoding="utf-8")
    refusals: list[tuple[Callable[[], object], str]] = [
        (lambda: ChannelSecurity.from_env({"AETHER_TOKEN": token}), "AETHER_TOKEN: "),
        # Built directly, it was never checked: every call failed INTERNAL "Invalid metadata".
        (lambda: ChannelSecurity(token=token), "ChannelSecurity token: "),
        (lambda: ChannelSecurity.from_env({"AETHER_TOKEN_FILE": str(token_file)}), "AETHER_TOKEN_FILE "),
        (lambda: AuthSettings.from_env({"AETHER_ADMIN_TOKEN": token}), "AETHER_ADMIN_TOKEN: "),
        (
            lambda: AuthSettings.from_env({"AETHER_ADMIN_TOKEN_FILE": str(token_file)}),
            "AETHER_ADMIN_TOKEN_FILE ",
        ),
    ]
    for read, name in refusals:
        with pytest.raises(ConfigurationError) as refused:
            read()
        message = str(refused.value)
        assert message.startswith(name) and what in message and "printable ASCII" in message
        assert "secret" not in message  # the token is never shown
