"""Migration 0028 (``ingestion_intents``, the write-ahead intents of a chunk's offline files) goes down and
up again on SQLite and PostgreSQL, and the migrated schema equals the models'."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

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
    assert indexes == {"ix_ingestion_intents_state_updated"}
