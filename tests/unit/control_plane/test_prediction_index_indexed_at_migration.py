"""Migration 0035 (``prediction_index.indexed_at_us``, when the monitor indexed a prediction) goes down and
up again on SQLite and PostgreSQL, the migrated schema equals the models', and a prediction indexed
before it has no time: its label counts in the retraining loop's label volume by its recorded time."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from control_plane.db import create_session_factory, upgrade_to_head
from control_plane.db.migrate import alembic_config
from control_plane.db.schema import metadata as all_tables
from control_plane.retraining.observe import new_labels


def columns(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return {str(column["name"]) for column in inspect(connection).get_columns("prediction_index")}


def test_migration_0035_goes_down_and_up_again_and_old_predictions_count_by_their_labels_time(
    db_url: str, engine: Engine
) -> None:
    assert "indexed_at_us" in columns(engine)
    engine.dispose()
    command.downgrade(alembic_config(db_url), "0034_metric_chunk_step_ranges")
    assert "indexed_at_us" not in columns(engine)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO prediction_index (deployment, request_id, row, model_name, version, variant,"
                " ts_us, prediction, prediction_is_label) VALUES ('eta', 'r1', 0, 'eta', 1, 'primary', 10,"
                " '[1.0]', false)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO feedback (request_id, row, deployment, label, joined, recorded_at_us)"
                " VALUES ('r1', 0, '', 1.0, true, 500)"
            )
        )
    engine.dispose()
    upgrade_to_head(engine)
    with engine.connect() as connection:
        kept = connection.execute(text("SELECT request_id, indexed_at_us FROM prediction_index")).all()
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, all_tables) == []
    assert [tuple(row) for row in kept] == [("r1", None)]
    sessions = create_session_factory(engine)
    assert (new_labels(sessions, "eta", 0, 500), new_labels(sessions, "eta", 500, 1000)) == (1, 0)
    engine.dispose()
