"""The metadata database's identity (migration 0030, ``control_plane.db.store_identity``): every database
the migrations create or upgrade gets a random id of its own, kept across upgrades, restarts and copies;
a database created from the models alone gets one at its first read; 0030 goes down and up again on
SQLite and PostgreSQL."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, text

from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head
from control_plane.db.migrate import alembic_config
from control_plane.db.schema import metadata as all_tables
from control_plane.db.store_identity import read_store_id


def _rows(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(text("SELECT store_id FROM store_identity")).scalars())


def test_a_migrated_database_has_one_id_kept_across_upgrades(engine: Engine) -> None:
    sessions = create_session_factory(engine)
    made = read_store_id(sessions)
    assert str(uuid.UUID(made)) == made
    upgrade_to_head(engine)  # a restart of the control plane migrates again: a no-op
    assert read_store_id(sessions) == made and _rows(engine) == [made]


def test_each_new_database_gets_an_id_of_its_own(tmp_path: Path) -> None:
    ids = []
    for name in ("a", "b"):
        engine = create_db_engine(f"sqlite:///{tmp_path / name}.db")
        try:
            upgrade_to_head(engine)
            ids.append(read_store_id(create_session_factory(engine)))
        finally:
            engine.dispose()
    assert ids[0] != ids[1]


def test_a_database_created_from_the_models_gets_its_id_at_the_first_read(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'models.db'}")
    try:
        all_tables.create_all(engine)
        sessions = create_session_factory(engine)
        made = read_store_id(sessions)
        assert read_store_id(sessions) == made and _rows(engine) == [made]
    finally:
        engine.dispose()


def test_migration_0030_goes_down_and_up_again(db_url: str, engine: Engine) -> None:
    engine.dispose()
    before = _rows(engine)
    command.downgrade(alembic_config(db_url), "0029_ingestion_intent_tokens")
    # The id outlives the downgrade: a rollback and roll-forward of a release keeps the database's id,
    # where a new one made every data plane refuse the same database.
    assert _rows(engine) == before
    upgrade_to_head(engine)
    rows = _rows(engine)
    assert rows == before and len(rows) == 1 and re.fullmatch(r"[0-9a-f-]{36}", rows[0])
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, all_tables) == []
    engine.dispose()
