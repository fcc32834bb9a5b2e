"""Migration 0028 (``ingestion_intents``, the write-ahead intents of a chunk's offline files) and 0029 (each
intent's ``token``, an identity never reused) go down and up again on SQLite and PostgreSQL, the migrated
schema equals the models', and an intent kept across 0029 gets a token of its own."""

from __future__ import annotations

import re

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from control_plane.db import upgrade_to_head
from control_plane.db.migrate import alembic_config
from control_plane.db.schema import metadata as all_tables


def tables(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(inspect(connection).get_table_names())


def test_migration_0028_goes_down_and_up_again(db_url: str, engine: Engine) -> None:
    assert "ingestion_intents" in tables(engine)
    engine.dispose()
    command.downgrade(alembic_config(db_url), "0027_feedback_prune_index")
    assert "ingestion_intents" not in tables(engine)
    upgrade_to_head(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert (
            context.get_current_revision()
            == ScriptDirectory.from_config(alembic_config(db_url)).get_current_head()
        )
        assert compare_metadata(context, all_tables) == []
        indexes = {str(index["name"]) for index in inspect(connection).get_indexes("ingestion_intents")}
    assert indexes == {"ix_ingestion_intents_state_updated", "ux_ingestion_intents_token"}


def test_migration_0029_gives_every_kept_intent_a_token_of_its_own(db_url: str, engine: Engine) -> None:
    engine.dispose()
    command.downgrade(alembic_config(db_url), "0028_ingestion_intents")
    with engine.begin() as connection:
        for k in range(3):
            connection.execute(
                text(
                    "INSERT INTO ingestion_intents (run_id, chunk, view, version, paths, state,"
                    " created_at_us, updated_at_us) VALUES (:run, 0, 'v', 1, '[]', 'writing', 0, 0)"
                ),
                {"run": f"run-{k}"},
            )
    engine.dispose()
    upgrade_to_head(engine)
    with engine.connect() as connection:
        tokens = connection.execute(text("SELECT token FROM ingestion_intents")).scalars().all()
    assert len(tokens) == len(set(tokens)) == 3
    assert all(re.fullmatch("[0-9a-f]{32}", token) for token in tokens)
    engine.dispose()
    command.downgrade(alembic_config(db_url), "0028_ingestion_intents")
    with engine.connect() as connection:
        columns = {column["name"] for column in inspect(connection).get_columns("ingestion_intents")}
        assert "token" not in columns
        assert len(connection.execute(text("SELECT id FROM ingestion_intents")).all()) == 3
