"""Twenty CreateDeployment calls at once against a control plane with twenty worker threads (asyncio's
executor on a 16-core host), each call queued behind the deployments lock, on each database. Before, the
call that got the lock asked the model registry in a second pooled connection while every one of the
pool's 5 + 10 was held by a call queued behind it: it waited the pool's 30 s and failed UNAVAILABLE
("QueuePool limit ... reached"), and the calls queued behind it failed or stalled with it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine

from clients.aether.v1 import deployments_pb2 as pb
from clients.errors import AetherError
from clients.sdk.deployments import DeploymentsClient
from control_plane.db import create_db_engine, create_session_factory, write_session
from control_plane.deployments import store
from control_plane.settings import ControlPlaneSettings
from tests.integration.deployments.conftest import Models, ThreadedControlPlane

CALLS = 20
#: The pool a control plane had whatever its threads: SQLAlchemy's default 5, and 10 more on demand.
OLD_POOL_LIMIT = 15


@pytest.fixture
def plane(db_url: str, redis_url: str, tmp_path: Path) -> Iterator[ThreadedControlPlane]:
    settings = ControlPlaneSettings(
        home=tmp_path / "home",
        db_url=db_url,
        redis_url=redis_url,
        listen_addr="127.0.0.1:0",
        shutdown_grace_s=0.5,
        worker_threads=CALLS,  # asyncio's default on a 16-core host: min(32, CPUs + 4)
    )
    server = ThreadedControlPlane(settings)
    yield server
    server.stop()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(db_url)
    yield engine
    engine.dispose()


def create(address: str, name: str, version: int) -> str:
    variant = pb.Variant(name="p", model_name="pm", version=version, role=pb.VARIANT_ROLE_PRIMARY)
    try:
        with DeploymentsClient(address, timeout=25) as client:
            client.create(name, [variant])
    except AetherError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def test_twenty_concurrent_creates_queued_behind_the_lock_all_succeed(
    plane: ThreadedControlPlane, db_url: str, tmp_path: Path, engine: Engine
) -> None:
    models = Models(db_url, tmp_path / "home")
    try:
        version = models.register("pm")
    finally:
        models.close()
    server_pool = plane.context.engine.pool
    started = time.monotonic()
    with ThreadPoolExecutor(CALLS) as callers:
        # The deployments lock held here (SQLite: the write lock; PostgreSQL: the revision row) until the
        # calls have queued behind it with as many connections as the old pool had, so that the first to
        # get it always finds every other connection taken, as under load.
        with write_session(create_session_factory(engine)) as held:
            store.lock_revision(held)
            calls: list[Future[str]] = [
                callers.submit(create, plane.address, f"d{i}", version) for i in range(CALLS)
            ]
            deadline = time.monotonic() + 30
            while server_pool.checkedout() < OLD_POOL_LIMIT:  # type: ignore[attr-defined]
                assert time.monotonic() < deadline, "the calls did not queue behind the lock"
                time.sleep(0.02)
        outcomes = [call.result() for call in calls]
    elapsed = time.monotonic() - started
    assert outcomes == ["ok"] * CALLS
    assert server_pool.size() > CALLS  # type: ignore[attr-defined]  # a connection for every thread
    assert elapsed < 20, f"{CALLS} creates took {elapsed:.1f} s"
