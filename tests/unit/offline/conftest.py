"""A real feature registry over a migrated SQLite file and an offline store in a scratch folder.

SQLite only (not every ``db_url`` backend): these tests exercise the join and the store, which read the
registry through its public API; the registry's backends have their own tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head
from control_plane.features.registry import FeatureRegistry
from control_plane.offline.store import OfflineStore


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'aether.db'}")
    upgrade_to_head(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def registry(engine: Engine) -> FeatureRegistry:
    return FeatureRegistry(create_session_factory(engine))


@pytest.fixture
def store(tmp_path: Path) -> OfflineStore:
    return OfflineStore(str(tmp_path / "offline"))
