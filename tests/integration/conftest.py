"""Fixtures of the integration tests: a redis-server of the test's own, for tests that stop, restart, stall or
partition it (the shared one of tests/conftest.py is flushed between tests but never stopped)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_server import RedisServer


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()
