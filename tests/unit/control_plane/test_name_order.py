"""Listings by name come in the same order on every backend: byte (code point) order, as SQLite sorts,
also on a PostgreSQL database created with another collation (ICU's en-US here), whose pages follow it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from control_plane.artifacts.store import ArtifactStore
from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head
from control_plane.features.registry import FeatureRegistry
from control_plane.model_registry.registry import ModelRegistry
from control_plane.tracking.store import TrackingStore
from tests.support.postgres_server import PostgresServer
from tests.unit.control_plane.builders import entity, metadata, spec

#: Names every listing accepts, that byte order and en-US order sort differently: ICU puts ``_`` before
#: ``-`` before digits before letters, bytes put ``-`` (0x2d) before digits (0x30) before ``_`` (0x5f).
MODEL_NAMES = ["a-b", "a0", "a_b", "ab", "a-c", "a_a", "a9"]
FEATURE_NAMES = ["a0", "a_b", "ab", "a_a", "a9", "b"]  # no "-" in entity and view names
#: Experiment names are any text: ICU also ignores case at first, and puts "é" next to "e".
EXPERIMENT_NAMES = [*MODEL_NAMES, "Zeta", "alpha", "éclair", "beta", "B.2", "b.1"]
Page = tuple[list[str], str]


@pytest.fixture(params=["sqlite", "postgresql", "postgresql-icu-en-US"])
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'aether.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.fresh_url() if request.param == "postgresql" else server.icu_database_url("en-US")
    engine = create_db_engine(url)
    upgrade_to_head(engine)
    yield create_session_factory(engine)
    engine.dispose()


def every_page(list_page: Callable[[int, str], Page]) -> list[str]:
    """The names of a listing read one item per page, following its tokens."""
    names, token = list_page(1, "")
    while token:
        more, token = list_page(1, token)
        names += more
    return names


def test_models_experiments_entities_and_views_are_listed_and_paged_in_byte_order(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    models = ModelRegistry(sessions, ArtifactStore(str(tmp_path / "artifacts")))
    tracking, features = TrackingStore(sessions), FeatureRegistry(sessions)
    for name in MODEL_NAMES:
        models.create_model(name, actor="ci")
    for name in EXPERIMENT_NAMES:
        tracking.create_experiment(name, actor="ci")
    for name in FEATURE_NAMES:
        features.create_entity(entity(name))
        features.create_feature_view(spec(name, entity=name), metadata())

    def model_page(size: int, token: str) -> Page:
        found, token = models.list_models("a", page_size=size, page_token=token)
        return [m.name for m in found], token

    def experiment_page(size: int, token: str) -> Page:
        found, token = tracking.list_experiments(size, token)
        return [e.name for e in found], token

    def entity_page(size: int, token: str) -> Page:
        found, token = features.list_entities_page(size, token)
        return [e.name for e in found], token

    def view_page(size: int, token: str) -> Page:
        found, token = features.list_feature_views_page(page_size=size, page_token=token)
        return [v.spec.name for v in found], token

    assert model_page(100, "")[0] == every_page(model_page) == sorted(MODEL_NAMES)
    assert experiment_page(100, "")[0] == every_page(experiment_page) == sorted(EXPERIMENT_NAMES)
    assert entity_page(100, "")[0] == every_page(entity_page) == sorted(FEATURE_NAMES)
    assert view_page(100, "")[0] == every_page(view_page) == sorted(FEATURE_NAMES)
    assert [e.name for e in features.list_entities()] == sorted(FEATURE_NAMES)
    snapshot = features.snapshot()
    assert (
        [e.name for e in snapshot.entities] == [v.spec.name for v in snapshot.views] == sorted(FEATURE_NAMES)
    )
