"""A feature registry over a real, migrated metadata database per test, on every backend ``db_url``
(tests/conftest.py) provides: a SQLite file and a PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head
from control_plane.features.registry import FeatureRegistry


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def registry(engine: Engine) -> FeatureRegistry:
    return FeatureRegistry(create_session_factory(engine))
