"""WatchRegistry: a snapshot on connect, a new one after every change (at once for changes made through
the server, by polling for changes other processes make), no retired versions, a clean end on stop."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import TypeAlias

import grpc.aio
import pytest

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2
from clients.aether.v1.feature_registry_pb2_grpc import FeatureRegistryStub
from control_plane.db import create_db_engine, create_session_factory
from control_plane.features.registry import FeatureRegistry
from control_plane.server import ControlPlaneServer, start_server
from control_plane.settings import ControlPlaneSettings
from tests.unit.control_plane.builders import entity, metadata, spec

pytestmark = pytest.mark.integration

Stream: TypeAlias = grpc.aio.UnaryStreamCall[pb.WatchRegistryRequest, pb.RegistrySnapshot]


async def next_snapshot(stream: Stream, timeout_s: float = 3.0) -> pb.RegistrySnapshot:
    message = await asyncio.wait_for(stream.read(), timeout_s)
    assert isinstance(message, pb.RegistrySnapshot), message
    return message


def versions(snapshot: pb.RegistrySnapshot) -> list[tuple[str, int, int]]:
    return [(view.spec.name, view.version, view.status) for view in snapshot.views]


@pytest.fixture
async def slow_poll_server(settings: ControlPlaneSettings) -> AsyncIterator[ControlPlaneServer]:
    """Polls so rarely that only the in-process wake-up can deliver a snapshot within a test."""
    handle = await start_server(dataclasses.replace(settings, watch_poll_interval_s=60.0))
    yield handle
    await handle.stop()


async def test_snapshot_on_connect_then_after_each_change(slow_poll_server: ControlPlaneServer) -> None:
    async with grpc.aio.insecure_channel(slow_poll_server.address) as channel:
        stub = FeatureRegistryStub(channel)  # type: ignore[no-untyped-call]
        stream = stub.WatchRegistry(pb.WatchRegistryRequest())
        first = await next_snapshot(stream)
        assert (first.revision, list(first.entities), list(first.views)) == (0, [], [])

        await stub.CreateEntity(pb.CreateEntityRequest(entity=entity()))
        await next_snapshot(stream)
        started = time.monotonic()
        await stub.CreateFeatureView(pb.CreateFeatureViewRequest(spec=spec(), metadata=metadata()))
        created = await next_snapshot(stream)

        assert time.monotonic() - started < 2.0
        assert created.revision > first.revision
        assert versions(created) == [("driver_stats", 1, types_pb2.ACTIVE)]
        assert created.views[0].schema_fingerprint != 0

        # A change made in process, not through the service, wakes the stream just as fast.
        started = time.monotonic()
        await asyncio.to_thread(slow_poll_server.registry.create_entity, entity("rider"))
        in_process = await next_snapshot(stream)
        assert time.monotonic() - started < 2.0
        assert [e.name for e in in_process.entities] == ["driver", "rider"]
        stream.cancel()


async def test_retired_versions_leave_the_snapshot(stub: FeatureRegistryStub) -> None:
    await stub.Apply(pb.ApplyRequest(entities=[entity()]))
    await stub.CreateFeatureView(pb.CreateFeatureViewRequest(spec=spec()))
    await stub.CreateFeatureViewVersion(pb.CreateFeatureViewVersionRequest(spec=spec(ttl_seconds=1)))
    stream = stub.WatchRegistry(pb.WatchRegistryRequest())
    assert versions(await next_snapshot(stream)) == [
        ("driver_stats", 1, types_pb2.ACTIVE),
        ("driver_stats", 2, types_pb2.ACTIVE),
    ]

    await stub.DeprecateFeatureViewVersion(pb.ChangeVersionStatusRequest(name="driver_stats", version=1))
    deprecated = await next_snapshot(stream)
    await stub.RetireFeatureViewVersion(pb.ChangeVersionStatusRequest(name="driver_stats", version=1))
    retired = await next_snapshot(stream)

    assert versions(deprecated) == [
        ("driver_stats", 1, types_pb2.DEPRECATED),
        ("driver_stats", 2, types_pb2.ACTIVE),
    ]
    assert versions(retired) == [("driver_stats", 2, types_pb2.ACTIVE)]
    assert retired.revision > deprecated.revision
    stream.cancel()


async def test_client_holding_the_current_revision_waits_for_the_next(stub: FeatureRegistryStub) -> None:
    await stub.CreateEntity(pb.CreateEntityRequest(entity=entity()))
    current = await next_snapshot(stub.WatchRegistry(pb.WatchRegistryRequest()))

    stream = stub.WatchRegistry(pb.WatchRegistryRequest(known_revision=current.revision))
    # A timed-out read would cancel the call, so one read stays pending across the pause.
    pending = asyncio.ensure_future(stream.read())
    done, _ = await asyncio.wait({pending}, timeout=0.3)
    assert not done, "sent a snapshot the client already holds"
    await stub.CreateEntity(pb.CreateEntityRequest(entity=entity("rider")))
    latest = await asyncio.wait_for(pending, 3.0)
    assert isinstance(latest, pb.RegistrySnapshot)

    assert latest.revision == current.revision + 1
    assert [e.name for e in latest.entities] == ["driver", "rider"]
    stream.cancel()


async def test_changes_by_another_process_are_seen_by_polling(
    stub: FeatureRegistryStub, settings: ControlPlaneSettings
) -> None:
    stream = stub.WatchRegistry(pb.WatchRegistryRequest())
    await next_snapshot(stream)
    other_engine = create_db_engine(settings.db_url)  # its own connections, as another process has
    try:
        other = FeatureRegistry(create_session_factory(other_engine))
        await asyncio.to_thread(other.create_entity, entity())
    finally:
        other_engine.dispose()

    seen = await next_snapshot(stream)  # the fixture's server polls every 0.1 s
    assert [e.name for e in seen.entities] == ["driver"]
    stream.cancel()


async def test_stop_ends_watch_streams_cleanly(settings: ControlPlaneSettings) -> None:
    handle = await start_server(dataclasses.replace(settings, shutdown_grace_s=10.0))
    async with grpc.aio.insecure_channel(handle.address) as channel:
        stub = FeatureRegistryStub(channel)  # type: ignore[no-untyped-call]
        stream = stub.WatchRegistry(pb.WatchRegistryRequest())
        await next_snapshot(stream)

        started = time.monotonic()
        await handle.stop()

        assert time.monotonic() - started < 2.0  # did not wait out the 10 s grace for the stream
        assert await asyncio.wait_for(stream.read(), 2.0) is grpc.aio.EOF
        assert await stream.code() == grpc.StatusCode.OK


async def test_every_snapshot_carries_the_join_key_limit_of_this_control_planes_ingestion(
    settings: ControlPlaneSettings,
) -> None:
    """AETHER_MAX_JOIN_KEY_BYTES of the control plane (``max_join_key_bytes``) travels with each snapshot:
    the data planes refuse reads of longer keys by it, not by their own environment's value."""
    handle = await start_server(dataclasses.replace(settings, max_join_key_bytes=2000))
    try:
        async with grpc.aio.insecure_channel(handle.address) as channel:
            stub = FeatureRegistryStub(channel)  # type: ignore[no-untyped-call]
            stream = stub.WatchRegistry(pb.WatchRegistryRequest())
            assert (await next_snapshot(stream)).max_join_key_bytes == 2000
            await stub.CreateEntity(pb.CreateEntityRequest(entity=entity()))
            assert (await next_snapshot(stream)).max_join_key_bytes == 2000
            stream.cancel()
    finally:
        await handle.stop()
