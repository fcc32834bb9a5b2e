"""The control plane's Redis clients time out (``control_plane.redis_clients``), against a real
redis-server of each test's own frozen with SIGSTOP: it accepts connections (the kernel does) but never
answers, as behind a network partition that sends no RST. Without timeouts each of these waited for ever:
an RPC touching Redis never answered, a background loop's pass never ended. A blocking stream read,
whose BLOCK is longer than the socket timeout, still answers empty on an idle stream."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
import redis

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2
from clients.errors import Unavailable
from clients.sdk.ingestion import IngestionClient
from control_plane.api.ingestion import add_to_server as ingestion_service
from control_plane.features.online_cleanup import cleanup_states
from control_plane.ingestion.streaming.redis_source import RedisStreamSource
from control_plane.server import start_server
from control_plane.settings import ControlPlaneSettings
from kernels.online_keys import online_key
from tests.support.redis_server import RedisServer
from tests.unit.control_plane.builders import entity, metadata, spec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TIMEOUT_S = 0.5
#: How long a call may take against the frozen Redis: its timeout and some slack (a loaded CI machine).
WITHIN_S = 4 * TIMEOUT_S
#: How long a test waits for what would hang without timeouts, before calling it a hang.
HANG_S = 10.0


class Frozen:
    """A redis-server of the test's own that ``freeze`` stops with SIGSTOP and ``thaw`` continues."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.frozen = False

    def freeze(self) -> None:
        assert self.server.process is not None
        os.kill(self.server.process.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        assert self.server.process is not None
        os.kill(self.server.process.pid, signal.SIGCONT)
        self.frozen = False


@pytest.fixture
def redis_server_own() -> Iterator[Frozen]:
    server = RedisServer()
    server.start()
    frozen = Frozen(server)
    yield frozen
    if frozen.frozen:
        frozen.thaw()
    server.close()


def settings_for(tmp_path: Path, redis_url: str) -> ControlPlaneSettings:
    return ControlPlaneSettings(
        home=tmp_path, db_url=f"sqlite:///{tmp_path / 'aether.db'}", redis_url=redis_url,
        listen_addr="127.0.0.1:0", redis_timeout_s=TIMEOUT_S, online_cleanup_interval_s=3600.0,
    )  # fmt: skip


CLIMATE = pb.FeatureViewSpec(
    name="climate",
    entity="sensor",
    features=[pb.Feature(name="temperature_c", value_type=types_pb2.FLOAT32)],
)


def readings() -> pa.Table:
    return pa.table(
        {
            "sensor_id": pa.array([1, 2], pa.int64()),
            "event_ts": pa.array([datetime.now(UTC)] * 2, pa.timestamp("us", tz="UTC")),
            "temperature_c": pa.array([20.5, 21.0], pa.float32()),
        }
    )


async def test_an_rpc_touching_a_hung_redis_answers_unavailable_naming_redis_and_works_after(
    tmp_path: Path, redis_server_own: Frozen
) -> None:
    settings = settings_for(tmp_path, redis_server_own.server.url)
    server = await start_server(settings, services=[ingestion_service])
    client = IngestionClient(server.address, timeout=HANG_S)
    try:
        server.registry.create_entity(
            pb.Entity(name="sensor", join_keys=[pb.JoinKey(name="sensor_id", value_type=types_pb2.INT64)])
        )
        server.registry.create_feature_view(CLIMATE, pb.FeatureViewMetadata())
        redis_server_own.freeze()
        started = time.monotonic()
        # Before: no answer until the call's own deadline (DEADLINE_EXCEEDED), with a worker thread stuck.
        with pytest.raises(Unavailable, match=r"Redis.*TimeoutError|TimeoutError.*Redis"):
            await asyncio.to_thread(client.ingest, "climate", readings())
        elapsed = time.monotonic() - started
        assert elapsed < WITHIN_S, f"the call took {elapsed:.1f} s against a hung Redis"

        redis_server_own.thaw()
        response = await asyncio.to_thread(client.ingest, "climate", readings())
        assert (response.records_in, response.accepted) == (2, 2)
        stored = redis.Redis.from_url(redis_server_own.server.url)
        assert stored.exists(online_key("sensor", ["1"], "climate", 1)) == 1
        stored.close()
    finally:
        client.close()
        if redis_server_own.frozen:
            redis_server_own.thaw()
        await server.stop()


async def test_the_servers_online_cleanup_pass_ends_within_the_timeout_on_a_hung_redis_and_recovers(
    tmp_path: Path, redis_server_own: Frozen
) -> None:
    settings = settings_for(tmp_path, redis_server_own.server.url)
    server = await start_server(settings, services=[])
    cleanup = server.online_cleanup
    assert cleanup is not None
    try:
        server.registry.create_entity(entity("user", keys=(("user_id", types_pb2.INT64),)))
        server.registry.create_feature_view(spec("user", "user"), metadata())
        writer = redis.Redis.from_url(redis_server_own.server.url)
        writer.set(online_key("user", ["7"], "user", 1), b"blob")
        server.registry.delete_feature_view("user")  # the loop's next pass is an hour away
        redis_server_own.freeze()
        started = time.monotonic()
        # Before: the pass waited for ever (and the control plane's stop, which waits for it, with it).
        assert await asyncio.wait_for(cleanup.run_once(), HANG_S) == []
        elapsed = time.monotonic() - started
        assert elapsed < WITHIN_S, f"a pass took {elapsed:.1f} s against a hung Redis"
        # The loop's own first pass may have run beside this one, and failed the same way.
        assert list(cleanup.failures) == [("user", 1)]

        redis_server_own.thaw()
        done = await asyncio.wait_for(cleanup.run_once(), HANG_S)
        # This pass did the version, unless the loop's own pass (blocked on the frozen Redis beside it)
        # finished first once Redis answered again: either way the version is cleaned up exactly once.
        assert [c.view for c, _removed in done] in (["user"], [])
        assert writer.exists(online_key("user", ["7"], "user", 1)) == 0
        with server.context.sessions() as session:
            assert cleanup_states(session, "user") == [(1, True)]
        writer.close()
    finally:
        if redis_server_own.frozen:
            redis_server_own.thaw()
        await server.stop()


def test_a_stream_read_blocking_longer_than_the_socket_timeout_answers_empty_on_an_idle_stream(
    tmp_path: Path, redis_server_own: Frozen, caplog: pytest.LogCaptureFixture
) -> None:
    # The materializer's client, as its entry point builds it; BLOCK twice the socket timeout.
    settings = ControlPlaneSettings(
        home=tmp_path, db_url="sqlite://", redis_url=redis_server_own.server.url, redis_timeout_s=TIMEOUT_S
    )
    client = settings.redis_client()
    source = RedisStreamSource(client, "events:idle", "materializer", "consumer-1")
    block_ms = int(2 * TIMEOUT_S * 1000)
    answers: list[int] = []
    caplog.set_level(logging.WARNING, logger="aether.ingestion.stream")

    def read() -> None:
        answers.append(len(source.read(10, block_ms).ids))

    try:
        for _ in range(2):
            started = time.monotonic()
            # Before: each XREADGROUP timed out after TIMEOUT_S and was retried, for ever.
            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            reader.join(HANG_S)
            assert not reader.is_alive(), "a read of an idle stream never answered"
            elapsed = time.monotonic() - started
            assert block_ms / 1000 * 0.9 <= elapsed < block_ms / 1000 + WITHIN_S
        assert answers == [0, 0]
        assert not [r for r in caplog.records if "redis unavailable" in r.getMessage()]

        client.xadd("events:idle", {"a": "1"})  # and a message is read as before
        assert source.read(10, block_ms).ids != []
    finally:
        source.close()
        client.close()
