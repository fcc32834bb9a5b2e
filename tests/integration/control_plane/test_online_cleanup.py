"""Deleting a feature view removes its online values in the background (``features/online_cleanup.py``),
against a real redis-server and a real metadata database (SQLite and PostgreSQL): only the deleted
versions' keys go, never another view's (one named as a prefix of it) nor a newer version of the same
name; a pass with Redis down leaves the work pending for a later pass, or a restarted control plane."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import grpc.aio
import pytest
import redis
import redis.asyncio
import sqlalchemy.exc
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import Engine

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2
from clients.aether.v1.feature_registry_pb2_grpc import FeatureRegistryStub
from clients.errors import NotFound
from control_plane.audit.query import iter_entries
from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head
from control_plane.features.online_cleanup import (
    OnlineCleanup,
    database_down,
    deleted_view_fence,
    is_online_key_of,
)
from control_plane.features.registry import FeatureRegistry
from control_plane.server import start_server
from control_plane.settings import ControlPlaneSettings
from kernels.online_keys import online_key
from tests.support.ports import refused_address
from tests.support.postgres_server import PostgresServer
from tests.support.redis_server import RedisServer
from tests.unit.control_plane.builders import entity, metadata, spec

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(db_url: str) -> Engine:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    return engine


def write_keys(client: redis.Redis, entity_name: str, view: str, version: int, ids: range) -> set[bytes]:
    keys = {online_key(entity_name, [str(i)], view, version) for i in ids}
    keys.add(online_key(entity_name, ["a:b}c"], view, version))  # a join value that needs escaping
    client.mset(dict.fromkeys(keys, b"blob"))
    return keys


def remaining(client: redis.Redis) -> set[bytes]:
    return {key for key in client.scan_iter(match="ae:*")}


async def test_a_delete_removes_only_the_deleted_versions_keys(engine: Engine, redis_url: str) -> None:
    sessions = create_session_factory(engine)
    registry = FeatureRegistry(sessions)
    registry.create_entity(entity("user", keys=(("user_id", types_pb2.INT64),)))
    registry.create_feature_view(spec("user", "user"), metadata())
    registry.create_feature_view(spec("user_stats", "user"), metadata())
    registry.create_feature_view_version(spec("user", "user", ttl_seconds=60))
    client = redis.Redis.from_url(redis_url)
    deleted = write_keys(client, "user", "user", 1, range(2500)) | write_keys(
        client, "user", "user", 2, range(5)
    )
    kept = write_keys(client, "user", "user_stats", 1, range(3000))

    registry.delete_feature_view("user")  # returns without touching Redis: the cleanup is pending
    assert remaining(client) == deleted | kept
    with pytest.raises(
        NotFound, match=r"'user' not found \(deleted; the online values of versions 1, 2 being"
    ):
        registry.get_feature_view("user")
    # Created again (versions continue at 3) and written while the deleted versions' keys still exist.
    registry.create_feature_view(spec("user", "user"), metadata())
    kept |= write_keys(client, "user", "user", 3, range(2000))

    cleanup = OnlineCleanup(sessions, redis.asyncio.Redis.from_url(redis_url), batch=100)
    done = await cleanup.run_once()

    assert [(c.view, c.version, removed) for c, removed in done] == [("user", 1, 2501), ("user", 2, 6)]
    assert remaining(client) == kept
    assert client.exists(deleted_view_fence("user", 1), deleted_view_fence("user", 2)) == 2
    assert await cleanup.run_once() == []  # done is done: no second scan
    entries = [e for e in iter_entries(sessions) if e.action == "online_cleanup"]
    assert [(e.actor, e.object_id, e.after) for e in entries] == [
        ("online-cleanup", "user", {"version": 1, "entity": "user", "online_keys_removed": 2501}),
        ("online-cleanup", "user", {"version": 2, "entity": "user", "online_keys_removed": 6}),
    ]
    registry.delete_feature_view("user")
    with pytest.raises(NotFound, match=r"versions 1, 2, 3 being removed"):
        registry.get_feature_view("user")
    await cleanup.run_once()
    with pytest.raises(NotFound, match=r"versions 1, 2, 3 removed\)"):
        registry.get_feature_view("user")
    assert remaining(client) == write_keys(client, "user", "user_stats", 1, range(3000))


async def test_with_redis_down_the_delete_succeeds_and_a_later_pass_finishes(
    engine: Engine, redis_url: str
) -> None:
    sessions = create_session_factory(engine)
    registry = FeatureRegistry(sessions)
    registry.create_entity(entity("user", keys=(("user_id", types_pb2.INT64),)))
    registry.create_feature_view(spec("user", "user"), metadata())
    client = redis.Redis.from_url(redis_url)
    write_keys(client, "user", "user", 1, range(10))

    registry.delete_feature_view("user")
    down = OnlineCleanup(sessions, redis.asyncio.Redis.from_url(f"redis://{refused_address()}/0"))
    assert await down.run_once() == []  # logged: the version stays pending for the next pass
    assert down.failures == {("user", 1): 1}
    with pytest.raises(NotFound, match="being removed"):
        registry.get_feature_view("user")

    # Another cleanup over the same database, as in a control plane restarted meanwhile, finishes it.
    restarted = OnlineCleanup(sessions, redis.asyncio.Redis.from_url(redis_url))
    assert [removed for _, removed in await restarted.run_once()] == [11]
    assert remaining(client) == set()


async def test_with_redis_unreachable_a_pass_ends_at_the_first_outage_and_a_later_pass_does_all(
    engine: Engine,
) -> None:
    # Five pending versions. With Redis not answering, a pass used to try each in turn and wait for each
    # one's timeout (five timeouts); it now ends at the first, leaving the others pending, untried. A real
    # redis-server of its own: stopped (connection refused), then frozen with SIGSTOP (connections
    # accepted by the kernel, commands never answered: the client's timeout), then running again.
    timeout_s = 1.0
    views = [f"view_{i}" for i in range(5)]
    sessions = create_session_factory(engine)
    registry = FeatureRegistry(sessions)
    registry.create_entity(entity("user", keys=(("user_id", types_pb2.INT64),)))
    for view in views:
        registry.create_feature_view(spec(view, "user"), metadata())
    for view in views:
        registry.delete_feature_view(view)
    server = RedisServer()
    server.start()
    process = server.process
    assert process is not None
    options = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    # No retries: one failed command is one timeout (redis-py's default retries would multiply it).
    cleaner = redis.asyncio.Redis.from_url(server.url, retry=Retry(NoBackoff(), 0), **options)
    cleanup = OnlineCleanup(sessions, cleaner)
    frozen = False
    try:
        server.stop()  # refused
        assert await cleanup.run_once() == []
        assert cleanup.failures == {("view_0", 1): 1}  # the others were not tried

        server.start()  # same port, empty
        process = server.process
        assert process is not None
        client = redis.Redis.from_url(server.url)
        for view in views:
            write_keys(client, "user", view, 1, range(20))
        process.send_signal(signal.SIGSTOP)  # fault injection: Redis hangs, as behind a lost network
        frozen = True
        started = time.monotonic()
        assert await cleanup.run_once() == []
        elapsed = time.monotonic() - started
        assert elapsed < 2.5 * timeout_s, f"a pass took {elapsed:.1f} s with Redis unreachable"
        assert cleanup.failures == {("view_0", 1): 2}

        process.send_signal(signal.SIGCONT)
        frozen = False
        done = await cleanup.run_once()  # Redis back: the next pass cleans up every version
        assert [(c.view, removed) for c, removed in done] == [(view, 21) for view in views]
        assert remaining(client) == set()
        assert cleanup.failures == {}
        client.close()
    finally:
        if frozen:
            os.kill(process.pid, signal.SIGCONT)
        await cleaner.aclose()
        server.close()


async def test_with_the_database_down_a_pass_ends_at_the_first_outage_and_a_later_pass_does_all(
    redis_url: str, postgres_server: PostgresServer
) -> None:
    # Three pending versions; PostgreSQL goes down (an administrator's stop) during the first one's work,
    # so its mark_done fails. The pass used to go on with the others, each doing its Redis work (a
    # full-keyspace SCAN) and its outbox drain before its own mark_done failed the same way; it now ends at
    # the first, leaving the others pending and their keys untouched.
    engine = create_db_engine(postgres_server.fresh_url())
    upgrade_to_head(engine)
    views = [f"view_{i}" for i in range(3)]
    sessions = create_session_factory(engine)
    registry = FeatureRegistry(sessions)
    registry.create_entity(entity("user", keys=(("user_id", types_pb2.INT64),)))
    for view in views:
        registry.create_feature_view(spec(view, "user"), metadata())
    client = redis.Redis.from_url(redis_url)
    keys = {view: write_keys(client, "user", view, 1, range(20)) for view in views}
    for view in views:
        registry.delete_feature_view(view)
    drained: list[tuple[str, int]] = []

    def outboxes(view: str, version: int) -> int:  # step 4, just before the version's mark_done
        drained.append((view, version))
        if len(drained) == 1:
            postgres_server.stop(mode="fast")
        return 0

    cleanup = OnlineCleanup(sessions, redis.asyncio.Redis.from_url(redis_url), outboxes=outboxes)
    try:
        assert await cleanup.run_once() == []
        assert drained == [("view_0", 1)]  # the others were not tried
        assert cleanup.failures == {("view_0", 1): 1}
        assert remaining(client) == keys["view_1"] | keys["view_2"]
    finally:
        postgres_server.start_again()
    done = await cleanup.run_once()  # the database back: the next pass cleans up every version
    assert [(c.view, removed) for c, removed in done] == [(view, 0) for view in views[:1]] + [
        (view, 21) for view in views[1:]
    ]
    assert remaining(client) == set()
    assert cleanup.failures == {}
    client.close()
    engine.dispose()


async def test_the_server_cleans_up_after_a_delete_rpc(tmp_path: Path, db_url: str, redis_url: str) -> None:
    settings = ControlPlaneSettings(
        home=tmp_path, db_url=db_url, redis_url=redis_url, listen_addr="127.0.0.1:0",
        online_cleanup_interval_s=0.05,
    )  # fmt: skip
    server = await start_server(settings)
    client = redis.Redis.from_url(redis_url)
    try:
        server.registry.create_entity(entity())
        server.registry.create_feature_view(spec(), metadata())
        write_keys(client, "driver", "driver_stats", 1, range(50))
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = FeatureRegistryStub(channel)  # type: ignore[no-untyped-call]
            await stub.DeleteFeatureView(pb.DeleteFeatureViewRequest(name="driver_stats"))
        for _ in range(200):  # the loop's next pass (every 0.05 s) removes them: up to 10 s
            if not remaining(client):
                break
            await asyncio.sleep(0.05)
        assert remaining(client) == set()
    finally:
        await server.stop()


def test_only_exact_keys_of_the_version_match() -> None:
    assert is_online_key_of(online_key("user", ["7"], "user", 1), "user", "user", 1)
    assert is_online_key_of(online_key("user", ["a", "b:}"], "user", 1), "user", "user", 1)
    assert not is_online_key_of(online_key("user", ["7"], "user_stats", 1), "user", "user", 1)
    assert not is_online_key_of(online_key("user", ["7"], "user", 10), "user", "user", 1)
    assert not is_online_key_of(online_key("user_x", ["7"], "user", 1), "user", "user", 1)
    # What a glob's * would let through but the layout never produces.
    assert not is_online_key_of(b"ae:{user:7}:other}:user:v1", "user", "user", 1)


def test_a_conflict_between_transactions_is_no_database_outage() -> None:
    """A serialization failure or deadlock is about the one version's transaction: the pass goes on."""

    class DriverError(Exception):
        def __init__(self, sqlstate: str) -> None:
            super().__init__(f"SQLSTATE {sqlstate}")
            self.sqlstate = sqlstate

    def failure(sqlstate: str) -> sqlalchemy.exc.OperationalError:
        return sqlalchemy.exc.OperationalError("UPDATE ...", {}, DriverError(sqlstate))

    assert database_down(failure("08006")) and database_down(failure("57P01"))  # lost, admin shutdown
    assert not database_down(failure("40001")) and not database_down(failure("40P01"))
    assert not database_down(ValueError("not a database error"))
