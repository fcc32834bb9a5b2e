"""Migration 0034 (each metric chunk's step range, which GetMetricHistory pages find chunks by) goes down
and up again on SQLite and PostgreSQL, the migrated schema equals the models', the chunks kept across it
get their ranges from their steps, and a chunk stored without one (by a control plane older than the
migration, still running on the database) is still in every page."""

from __future__ import annotations

import numpy as np
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from clients.aether.v1 import tracking_pb2 as pb
from control_plane.db import create_session_factory, upgrade_to_head
from control_plane.db.migrate import alembic_config
from control_plane.db.schema import metadata as all_tables
from control_plane.tracking.store import TrackingStore


def _columns(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return {str(column["name"]) for column in inspect(connection).get_columns("tracking_metric_chunks")}


def _store_chunk(engine: Engine, run_pk: int, steps: list[int]) -> None:
    """A chunk as a control plane before migration 0034 wrote it: no step range."""
    packed = np.asarray(steps, dtype="<i8").tobytes()
    values = np.asarray([float(step) for step in steps], dtype="<f8").tobytes()
    with engine.begin() as connection:
        connection.execute(
            text(
                'INSERT INTO tracking_metric_chunks (run_pk, key, count, steps, "values", timestamps_us)'
                " VALUES (:run_pk, 'loss', :count, :steps, :values, :steps)"
            ),
            {"run_pk": run_pk, "count": len(steps), "steps": packed, "values": values},
        )


def test_migration_0034_gives_kept_chunks_their_step_ranges_and_pages_read_chunks_without_one(
    db_url: str, engine: Engine
) -> None:
    assert {"min_step", "max_step"} <= _columns(engine)
    store = TrackingStore(create_session_factory(engine))
    experiment_id = store.create_experiment("kept", actor="t").experiment_id
    run_id = store.create_run(experiment_id, "r", actor="t").run_id
    engine.dispose()
    command.downgrade(alembic_config(db_url), "0033_job_supervisor_lease")
    assert not {"min_step", "max_step"} & _columns(engine)
    with engine.connect() as connection:
        run_pk = connection.execute(text("SELECT id FROM tracking_runs")).scalar_one()
    _store_chunk(engine, run_pk, [7, 3, 9])
    _store_chunk(engine, run_pk, [-4])
    engine.dispose()
    upgrade_to_head(engine)
    with engine.connect() as connection:
        ranges = connection.execute(text("SELECT min_step, max_step FROM tracking_metric_chunks ORDER BY id"))
        assert [tuple(row) for row in ranges] == [(3, 9), (-4, -4)]
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, all_tables) == []
    store.log_batch(
        [pb.RunBatch(run_id=run_id, metrics=[pb.MetricSeries(key="loss", values=[1.5, 2.5], steps=[1, 8])])],
        actor="t",
    )
    _store_chunk(engine, run_pk, [0, 10])  # an older control plane's write, after the migration
    steps: list[int] = []
    token = ""
    while True:
        page, token = store.metric_history(run_id, "loss", page_size=2, page_token=token)
        steps += list(page.steps)
        if not token:
            break
    assert steps == [-4, 0, 1, 3, 7, 8, 9, 10]
    engine.dispose()
