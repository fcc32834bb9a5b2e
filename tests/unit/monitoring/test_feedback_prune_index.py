"""The monitor's prune reaches the labels past its horizons through the index on (joined, recorded_at_us)
(migration 0027), not by reading every label of a kind; the migration goes down and up again on SQLite and
PostgreSQL, and the migrated schema equals the models'."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Delete, Engine, inspect, text

from control_plane.db import upgrade_to_head
from control_plane.db.migrate import alembic_config
from control_plane.db.schema import metadata as all_tables
from control_plane.monitoring.feedback_prune import joined_label_prune, orphan_prune

INDEX = "ix_feedback_joined_recorded"


def plan(engine: Engine, statement: Delete) -> str:
    """The query plan of ``statement`` as the database would run it (nothing is deleted)."""
    sql = str(statement.compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql).all()
            return "\n".join(str(row[-1]) for row in rows)
        # An empty table is cheaper to read whole: with sequential scans off, the planner shows what the
        # best index of the table can do for the condition (an Index Cond, or a Filter over every row).
        connection.execute(text("SET LOCAL enable_seqscan = off"))
        return "\n".join(str(row[0]) for row in connection.exec_driver_sql("EXPLAIN " + sql).all())


def test_the_prunes_search_the_labels_before_their_horizon_through_the_index(engine: Engine) -> None:
    # Before 0027 SQLite searched ix_feedback_joined (joined=?): every joined label, nearly the table.
    for statement in (joined_label_prune(1_000), orphan_prune(1_000)):
        shown = plan(engine, statement)
        if engine.dialect.name == "sqlite":
            assert f"SEARCH feedback USING INDEX {INDEX} (joined=? AND recorded_at_us<?)" in shown, shown
        else:
            assert INDEX in shown, shown
            assert "recorded_at_us < " in shown.partition("Index Cond:")[2].partition("\n")[0], shown


def feedback_indexes(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return {str(index["name"]) for index in inspect(connection).get_indexes("feedback")}


def test_migration_0027_goes_down_and_up_again_keeping_the_labels(db_url: str, engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO feedback (request_id, row, deployment, label, joined, recorded_at_us)"
                " VALUES ('a', 0, '', 1, true, 5), ('b', 0, '', 0, false, 7)"
            )
        )
    assert feedback_indexes(engine) == {INDEX}
    engine.dispose()
    command.downgrade(alembic_config(db_url), "0026_redact_audit_webhooks")
    assert feedback_indexes(engine) == {"ix_feedback_joined"}
    upgrade_to_head(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert (
            context.get_current_revision()
            == ScriptDirectory.from_config(alembic_config(db_url)).get_current_head()
        )
        assert feedback_indexes(engine) == {INDEX}
        assert compare_metadata(context, all_tables) == []
        rows = connection.execute(text("SELECT request_id, joined FROM feedback ORDER BY request_id")).all()
    assert [(request_id, bool(joined)) for request_id, joined in rows] == [("a", True), ("b", False)]
