"""A page of a listing by name reads the name's index on PostgreSQL, also on a database created with
another collation (ICU's en-US here): the listings order by ``name COLLATE "C"`` (byte order, as on
SQLite, ``db/strings.py``), which an index built in the database's collation cannot serve, so each page
read and sorted every row of the table."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert, text

from control_plane.artifacts.store import ArtifactStore
from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head
from control_plane.db.schema import metadata as all_tables
from control_plane.deployments.core import DeploymentManager
from control_plane.features.registry import FeatureRegistry
from control_plane.model_registry.registry import ModelRegistry
from control_plane.tracking.store import TrackingStore
from tests.support.postgres_server import PostgresServer
from tests.unit.control_plane.builders import entity, metadata, spec

#: Names that byte order and en-US order sort differently (``-`` < digits < ``_`` in bytes; ICU puts
#: ``_`` before ``-`` before digits).
NAMES = ["a-b", "a0", "a_b", "ab", "a_a", "a9"]
FEATURE_NAMES = ["a0", "a_b", "ab", "a_a", "a9"]  # no "-" in entity and view names
#: Rows added to each listed table, after every name above: enough that reading and sorting them all
#: costs the planner more than an ordered index scan cut at the page's LIMIT.
BULK = 2000
Page = tuple[list[str], str]


@pytest.fixture
def icu_engine(postgres_server: PostgresServer) -> Iterator[Engine]:
    engine = create_db_engine(postgres_server.icu_database_url("en-US"))
    upgrade_to_head(engine)
    yield engine
    engine.dispose()


@contextmanager
def statements(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """The statements (and their parameters) run on ``engine`` inside the block."""
    seen: list[tuple[str, Any]] = []

    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", keep)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", keep)


NOW = 1_700_000_000_000_000
#: The columns besides ``name`` of each listed table's bulk rows (each has a ``description``).
BULK_ROWS: dict[str, dict[str, Any]] = {
    "registered_models": {"tags": {}, "latest_version": 0, "created_at_us": NOW, "updated_at_us": NOW},
    "tracking_experiments": {"tags": {}, "created_at_us": NOW},
    "entities": {"join_keys": [], "created_at_us": NOW, "updated_at_us": NOW},
    "feature_views": {
        "owner": "",
        "tags": {},
        "latest_version": 0,
        "created_at_us": NOW,
        "updated_at_us": NOW,
    },
    "deployments": {
        **{"routing_salt": "s", "serving": {}, "canary_policy": {}, "canary_state": {}, "plan_revision": 1},
        **{"created_by": "ci", "created_at_us": NOW, "updated_at_us": NOW},
    },
}


def _bulk(engine: Engine) -> None:
    """:data:`BULK` rows named ``b00000`` on in each listed table, and fresh statistics."""
    with engine.begin() as connection:
        for table, columns in BULK_ROWS.items():
            rows = [{**columns, "name": f"b{i:05d}", "description": ""} for i in range(BULK)]
            if table == "tracking_experiments":
                rows = [{**row, "experiment_id": f"x{row['name']}"} for row in rows]
            connection.execute(insert(all_tables.tables[table]), rows)
            connection.execute(text(f"ANALYZE {table}"))


def _plans(engine: Engine, seen: list[tuple[str, Any]], table: str) -> list[str]:
    """The plans of the statements in ``seen`` that list ``table`` by name."""
    plans = []
    with engine.connect() as connection:
        for statement, parameters in seen:
            if f"FROM {table}" in statement and "ORDER BY" in statement:
                found = connection.exec_driver_sql(f"EXPLAIN {statement}", parameters).scalars()
                plans.append("\n".join(found))
    return plans


def test_pages_of_listings_by_name_scan_the_name_index_in_byte_order_on_postgresql(
    icu_engine: Engine, tmp_path: Path
) -> None:
    sessions = create_session_factory(icu_engine)
    models = ModelRegistry(sessions, ArtifactStore(str(tmp_path / "artifacts")))
    tracking, features = TrackingStore(sessions), FeatureRegistry(sessions)
    deployments = DeploymentManager(sessions, models)
    for name in NAMES:
        models.create_model(name, actor="ci")
        tracking.create_experiment(name, actor="ci")
    for name in FEATURE_NAMES:
        features.create_entity(entity(name))
        features.create_feature_view(spec(name, entity=name), metadata())
    _bulk(icu_engine)

    def model_page(token: str) -> Page:
        found, token = models.list_models(page_size=4, page_token=token)
        return [m.name for m in found], token

    def experiment_page(token: str) -> Page:
        found, token = tracking.list_experiments(4, token)
        return [e.name for e in found], token

    def entity_page(token: str) -> Page:
        found, token = features.list_entities_page(3, token)
        return [e.name for e in found], token

    def view_page(token: str) -> Page:  # 2 + 2 + the one read to know there is more: no bulk view read
        found, token = features.list_feature_views_page(page_size=2, page_token=token)
        return [v.spec.name for v in found], token

    def deployment_page(token: str) -> Page:
        found, token = deployments.list_deployments(page_size=4, page_token=token)
        return [d.name for d in found], token

    listings = {
        "registered_models": (model_page, sorted(NAMES)),
        "tracking_experiments": (experiment_page, sorted(NAMES)),
        "entities": (entity_page, sorted(FEATURE_NAMES)),
        "feature_views": (view_page, sorted(FEATURE_NAMES)[:4]),
        "deployments": (deployment_page, [f"b{i:05d}" for i in range(8)]),
    }
    for table, (page, first_names) in listings.items():
        with statements(icu_engine) as seen:
            first, token = page("")
            second, _ = page(token)  # the keyset page: "name after the token's" is an index condition too
        assert (first + second)[: len(first_names)] == first_names, table
        plans = _plans(icu_engine, seen, table)
        assert len(plans) >= 2, (table, seen)
        for plan in plans:
            assert f"Index Scan using uq_{table}_name on {table}" in plan, plan
            assert "Sort" not in plan, plan  # no Sort node: the index gives the order
