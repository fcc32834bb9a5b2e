"""A feature registry over a real, migrated metadata database per test, on every backend ``db_url``
(tests/conftest.py) provides: a SQLite file and a PostgreSQL database."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from control_plane.db import create_session_factory
from control_plane.features.registry import FeatureRegistry


@pytest.fixture
def registry(engine: Engine) -> FeatureRegistry:
    return FeatureRegistry(create_session_factory(engine))
