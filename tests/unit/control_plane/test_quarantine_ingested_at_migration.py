"""Migration 0032 (``quarantine.ingested_at_us``, the stored row's ingestion time an ``online_pending``
record keeps for its online write) goes down and up again on SQLite and PostgreSQL, the migrated schema
equals the models', and a record kept across it has none (its online value is stamped when written)."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from control_plane.db import upgrade_to_head
from control_plane.db.migrate import alembic_config
from control_plane.db.schema import metadata as all_tables


def columns(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return {str(column["name"]) for column in inspect(connection).get_columns("quarantine")}


def test_migration_0032_goes_down_and_up_again_and_keeps_records_without_a_stamp(
    db_url: str, engine: Engine
) -> None:
    assert "ingested_at_us" in columns(engine)
    engine.dispose()
    command.downgrade(alembic_config(db_url), "0031_ingestion_run_published")
    assert "ingested_at_us" not in columns(engine)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO quarantine (run_id, record_key, view, version, source_kind, source_id, payload,"
                " reason, status, created_at_us, updated_at_us) VALUES ('run-1', '0', 'climate', 1,"
                " 'batch', 'test', '{}', 'online values not written yet', 'online_pending', 1, 0)"
            )
        )
    engine.dispose()
    upgrade_to_head(engine)
    with engine.connect() as connection:
        kept = connection.execute(text("SELECT status, ingested_at_us FROM quarantine")).all()
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, all_tables) == []
    assert [tuple(row) for row in kept] == [("online_pending", None)]
    engine.dispose()
