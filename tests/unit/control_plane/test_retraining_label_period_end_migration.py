"""Migration 0036 (``retraining_decisions.labels_until_us``, where a trigger's label-volume period ended)
goes down and up again on SQLite and PostgreSQL, the migrated schema equals the models', and a trigger
stored before it has no period end: the next label-volume period starts at its time, as it did."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from control_plane.db import create_session_factory, upgrade_to_head
from control_plane.db.migrate import alembic_config
from control_plane.db.schema import metadata as all_tables
from control_plane.retraining import records


def columns(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return {str(column["name"]) for column in inspect(connection).get_columns("retraining_decisions")}


def test_migration_0036_goes_down_and_up_again_and_an_old_trigger_starts_the_next_period_at_its_time(
    db_url: str, engine: Engine
) -> None:
    assert "labels_until_us" in columns(engine)
    engine.dispose()
    command.downgrade(alembic_config(db_url), "0035_prediction_index_indexed_at")
    assert "labels_until_us" not in columns(engine)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO retraining_decisions (deployment, at_us, stored_at_us, triggered, rules,"
                " reasons, outcome, job_id, actor, model_name, champion_version) VALUES ('eta', 700, 700,"
                " true, '[\"labels\"]', '[]', 'submitted', 'j1', 'retraining', 'eta', 1)"
            )
        )
    engine.dispose()
    upgrade_to_head(engine)
    with engine.connect() as connection:
        kept = connection.execute(text("SELECT at_us, labels_until_us FROM retraining_decisions")).all()
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, all_tables) == []
    assert [tuple(row) for row in kept] == [(700, None)]
    assert records.last_label_period_end(create_session_factory(engine), "eta") == 700
    engine.dispose()
