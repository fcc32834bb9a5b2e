"""Fixtures shared by every test: a real redis-server per test session, flushed between tests, and a
fresh metadata database per test on each supported backend (a SQLite file; a schema of its own in one
PostgreSQL cluster started for the whole session, only when a PostgreSQL-backed test runs)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis
from hypothesis import settings
from sqlalchemy import Engine

from control_plane.db import create_db_engine, upgrade_to_head
from tests.support.postgres_server import PostgresServer
from tests.support.redis_server import RedisServer

# Data planes started by tests (in process through from_env, or as processes that inherit this) run with
# the near cache off unless a test turns it on: with it, a read right after another client's write may
# still see the previous value until Redis's invalidation arrives (docs/architecture.md), and the tests
# that write and then read at once are about other things. tests/integration/data_plane/test_near_cache.py
# tests the cache, and the end-to-end demo runs with it on, as users run it.
os.environ.setdefault("AETHER_NEAR_CACHE_MB", "0")

# No per-example wall-clock deadline for property tests: on a shared 2-core host running four pytest
# workers, an example of a fast test (building a few keys) ran past hypothesis's default 200 ms and failed
# the run with DeadlineExceeded, which says the host was busy, not that the code is wrong. Most property
# tests already set deadline=None one by one; this makes it the rule, examples and failures unchanged.
settings.register_profile("aether", deadline=None)
settings.load_profile("aether")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """URL of the shared test redis-server, empty at the start of each test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.config_resetstat()
    client.close()
    yield redis_server.url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL cluster for the session. Fails (never skips) when PostgreSQL is not
    installed: scripts/bootstrap.sh installs it, and CI must run every test on both backends."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_engine(postgres_server: PostgresServer) -> Iterator[Engine]:
    """An engine on a fresh PostgreSQL database migrated to head, for tests that interleave PostgreSQL
    transactions by hand (tests/support/pg_interleave.py)."""
    engine = create_db_engine(postgres_server.fresh_url())
    upgrade_to_head(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh, empty metadata database URL for each test, one per supported backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db') / 'aether.db'}"
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        return server.fresh_url()
    raise AssertionError(f"unknown database backend {request.param}")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on :func:`db_url`'s database, migrated to head (a test module or folder that needs another
    one, e.g. unmigrated, defines its own ``engine``)."""
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    yield engine
    engine.dispose()
