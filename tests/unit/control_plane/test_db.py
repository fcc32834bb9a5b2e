"""The metadata database: migrations equal the models on every backend, SQLite is configured for
concurrent use."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy.exc
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, event, func, insert, inspect, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from clients.aether.v1 import types_pb2
from clients.errors import InvalidArgument
from control_plane.audit.chain import GENESIS_HASH, canonical_json, entry_hash
from control_plane.audit.log import record
from control_plane.audit.verify import verify_chain
from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head
from control_plane.db.engine import read_session, write_session
from control_plane.db.migrate import alembic_config
from control_plane.db.models import EntityRow
from control_plane.db.revision import current_revision
from control_plane.db.schema import metadata as all_tables
from control_plane.features.registry import FeatureRegistry
from control_plane.jobs.tables import JobRow
from control_plane.tracking.tables import ExperimentRow, MetricChunkRow, RunRow
from tests.support.row_ids import INT32_MAX, next_ids_just_below_int32_max
from tests.unit.control_plane.builders import entity, metadata, spec


def test_migrations_produce_exactly_the_models_schema(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, all_tables) == []
        assert set(inspect(connection).get_table_names()) == {*all_tables.tables, "alembic_version"}


def test_upgrade_is_idempotent_and_keeps_data(engine: Engine, registry: FeatureRegistry) -> None:
    registry.create_entity(entity())
    upgrade_to_head(engine)
    assert [e.name for e in registry.list_entities()] == ["driver"]
    assert registry.revision() == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # PRAGMAs exist on SQLite only
def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(engine: Engine) -> None:
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_engines_opening_a_new_sqlite_file_together_all_connect(tmp_path: Path) -> None:
    """Two processes opening a new database file at once both switch it to WAL; SQLite answers one of
    them "database is locked" at once (a deadlock, not a wait for its busy handler), about half the time:
    one of two control planes starting together failed in the test of concurrent migrations."""
    for trial in range(20):
        url = f"sqlite:///{tmp_path / f'fresh-{trial}.db'}"
        engines = [create_db_engine(url) for _ in range(2)]
        together = threading.Barrier(len(engines))
        for engine in engines:  # first of the connect listeners: both files open, then both configure
            event.listen(engine, "connect", lambda *_, barrier=together: barrier.wait(), insert=True)

        def connect(engine: Engine) -> str:
            with engine.connect() as connection:
                return str(connection.exec_driver_sql("PRAGMA journal_mode").scalar())

        try:
            with ThreadPoolExecutor(len(engines)) as pool:
                assert list(pool.map(connect, engines)) == ["wal", "wal"]
        finally:
            for engine in engines:
                engine.dispose()


def test_foreign_keys_are_enforced(engine: Engine) -> None:
    with engine.connect() as connection, pytest.raises(IntegrityError, match=r"(?i)foreign key"):
        connection.execute(
            text(
                "INSERT INTO feature_view_versions (view_id, version, entity_id, spec, status,"
                " schema_fingerprint, created_at_us, updated_at_us)"
                " VALUES (99, 1, 99, '{}', 'ACTIVE', '0', 0, 0)"
            )
        )


def test_eight_concurrent_writers_never_hit_database_is_locked(db_url: str, engine: Engine) -> None:
    """Each thread has its own engine, as separate processes would, and interleaves reads and writes."""
    writers, rounds = 8, 5
    start = threading.Barrier(writers)

    def write(index: int) -> int:
        own = create_db_engine(db_url)
        try:
            registry = FeatureRegistry(create_session_factory(own))
            start.wait()
            registry.create_entity(entity(f"e{index}", (("id", types_pb2.INT64),)))
            registry.create_feature_view(spec(name=f"v{index}", entity=f"e{index}"), metadata())
            for round_ in range(rounds):
                registry.list_feature_views()
                registry.update_feature_view_metadata(f"v{index}", metadata(owner=f"o{round_}"))
            return registry.get_feature_view(f"v{index}").version
        finally:
            own.dispose()

    with ThreadPoolExecutor(writers) as pool:
        versions = list(pool.map(write, range(writers)))

    registry = FeatureRegistry(create_session_factory(engine))
    assert versions == [1] * writers
    assert len(registry.list_entities()) == writers
    assert {view.metadata.owner for view in registry.list_feature_views()} == {f"o{rounds - 1}"}
    assert registry.revision() == writers * (2 + rounds)  # no mutation lost its revision bump


def test_text_holding_nul_is_invalid_on_every_backend(engine: Engine, registry: FeatureRegistry) -> None:
    """PostgreSQL cannot store NUL in text (its driver's DataError reached callers as INTERNAL) and
    SQLite would store it: the engine refuses it on both, for writes and for lookups, and nothing is
    written."""
    with pytest.raises(InvalidArgument, match="NUL character"):
        registry.create_entity(entity(description="night\x00shift"))
    with pytest.raises(InvalidArgument, match="NUL character"):
        registry.get_entity("driver\x00")
    assert registry.list_entities() == []
    registry.create_entity(entity(description="night shift"))  # the session is usable afterwards
    assert [e.description for e in registry.list_entities()] == ["night shift"]


def test_jobs_kept_before_the_stop_columns_upgrade_with_no_stop_in_progress(
    db_url: str, engine: Engine
) -> None:
    """Migration 0014 adds the stop in progress (kind and time of the SIGTERM) to existing job rows."""
    sessions = create_session_factory(engine)
    with sessions.begin() as session:
        session.add(
            JobRow(
                job_id="j1",
                name="old",
                spec={},
                state="RUNNING",
                reason="r",
                gpus=0,
                priority=0,
                max_retries=0,
                timeout_s=0.0,
                attempt=1,
                devices=[],
                process_ref="1:2",
                pid=1,
                attempt_started_at_us=1,
                submitted_at_us=1,
                started_at_us=1,
                finished_at_us=0,
                updated_at_us=1,
                submitted_by="ci",
                run_id="",
                folder="/tmp/j1",
                exit_code=None,
                outputs={},
                cancel_requested=False,
                cancel_reason="",
                stop_kind="timeout",
                stop_sent_at_us=5,
            )
        )
    engine.dispose()
    command.downgrade(alembic_config(db_url), "0013_redact_kept_uris")
    with engine.connect() as connection:
        assert "stop_kind" not in {column["name"] for column in inspect(connection).get_columns("jobs")}
    upgrade_to_head(engine)
    with sessions() as session:
        row = session.get(JobRow, "j1")
        assert row is not None and (row.state, row.stop_kind, row.stop_sent_at_us) == ("RUNNING", "", 0)


def test_retraining_decisions_kept_before_stored_at_take_their_decision_time(
    db_url: str, engine: Engine
) -> None:
    """Migration 0021 adds when a decision row was stored; older rows take their decision time, which is
    what their submit grace ran from before."""
    command.downgrade(alembic_config(db_url), "0020_drift_report_dropped_rows")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO retraining_decisions (id, deployment, at_us, triggered, rules, reasons, outcome,"
                " job_id, actor, model_name, champion_version) VALUES (1, 'eta', 1234, true, '[]', '[]',"
                " 'submitting', '', 'bob', 'eta', 1)"
            )
        )
    engine.dispose()
    upgrade_to_head(engine)
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT stored_at_us FROM retraining_decisions")).scalar_one()
    assert stored == 1234


def test_audit_entries_kept_before_the_outcome_column_still_verify(db_url: str, engine: Engine) -> None:
    """Migration 0015 adds the outcome of each audit entry; a chain written before it verifies after it
    (an empty outcome is not hashed), and a log holding a refusal, whose hash covers its outcome,
    cannot be downgraded below it."""
    sessions = create_session_factory(engine)
    engine.dispose()
    command.downgrade(alembic_config(db_url), "0014_job_stops")
    with engine.begin() as connection:  # as the control plane before 0015 wrote it: no outcome column
        prev = GENESIS_HASH
        for seq in (1, 2):
            fields: dict[str, Any] = {
                "seq": seq,
                "timestamp_us": seq,
                "actor": "alice",
                "action": "create",
                "object_type": "registered_model",
                "object_id": f"m{seq}",
                "before": None,
                "after": {"n": seq},
                "prev_hash": prev,
            }
            prev = entry_hash(**fields)
            connection.execute(
                text(
                    "INSERT INTO audit_log (seq, timestamp_us, actor, action, object_type, object_id,"
                    " before, after, prev_hash, hash) VALUES (:seq, :timestamp_us, :actor, :action,"
                    " :object_type, :object_id, NULL, :after, :prev_hash, :hash)"
                ),
                fields | {"after": canonical_json(fields["after"]), "hash": prev},
            )
        connection.execute(text("UPDATE audit_head SET seq = 2, hash = :hash"), {"hash": prev})
    upgrade_to_head(engine)
    assert (verify_chain(sessions).ok, verify_chain(sessions).entries_checked) == (True, 2)
    with write_session(sessions) as session:
        record(
            session,
            actor="bob",
            action="delete",
            object_type="registered_model",
            object_id="m1",
            before=None,
            after=None,
            outcome="refused: FAILED_PRECONDITION: it still has 1 version(s)",
        )
    assert (verify_chain(sessions).ok, verify_chain(sessions).entries_checked) == (True, 3)
    engine.dispose()
    with pytest.raises(RuntimeError, match="audit log holds 1 refused operation"):
        command.downgrade(alembic_config(db_url), "0014_job_stops")
    assert verify_chain(sessions).ok


def _row_id_types(connection: Connection) -> dict[tuple[str, str], str]:
    """The PostgreSQL type of every column the models give the type ``ROW_ID`` (BIGINT on PostgreSQL,
    INTEGER on SQLite): every generated id and every column that holds one."""
    columns = [
        (table.name, column.name)
        for table in all_tables.sorted_tables
        for column in table.columns
        if column.type.compile(postgresql.dialect()) == "BIGINT"
        and column.type.compile(sqlite.dialect()) == "INTEGER"
    ]
    query = text(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = current_schema()"
    )
    types = {(table, column): data_type for table, column, data_type in connection.execute(query)}
    return {key: types[key] for key in columns}


def _chunk(run_pk: int) -> dict[str, Any]:
    point = b"\0" * 8
    return {
        "run_pk": run_pk,
        "key": "loss",
        "count": 1,
        "steps": point,
        "values": point,
        "timestamps_us": point,
    }


def test_ids_kept_from_before_0024_upgrade_to_64_bits_and_continue_past_32(db_url: str) -> None:
    """Migration 0024: PostgreSQL's generated ids were 32-bit ``serial`` columns (SQLite's are 64-bit
    rowids), so the 2**31st insert into a table failed. A database at 0023 keeps its rows, and every
    generated id, every column holding one and every id sequence is 64-bit."""
    command.upgrade(alembic_config(db_url), "0023_feedback_counts")
    engine = create_db_engine(db_url)
    experiment = {"id": 1, "experiment_id": "e" * 32, "name": "e", "description": "", "tags": {}}
    run = {"run_id": "r" * 32, "experiment_pk": 1, "name": "r", "status": "RUNNING", "end_time_us": 0}
    try:
        with engine.begin() as connection:
            connection.execute(insert(ExperimentRow.__table__).values(**experiment, created_at_us=1))
            connection.execute(insert(RunRow.__table__).values(**run, id=1, start_time_us=1))
            for _ in range(2):
                connection.execute(insert(MetricChunkRow.__table__).values(**_chunk(1)))
        upgrade_to_head(engine)
        with engine.connect() as connection:
            assert connection.execute(select(func.count()).select_from(MetricChunkRow)).scalar_one() == 2
            if connection.dialect.name == "postgresql":
                types = _row_id_types(connection)
                assert types == dict.fromkeys(types, "bigint") and len(types) == 34
                query = "SELECT data_type, max_value FROM pg_sequences WHERE schemaname = current_schema()"
                sequences = connection.execute(text(query)).all()
                generated = [
                    table for table in all_tables.sorted_tables if table.autoincrement_column is not None
                ]
                assert sorted(sequences) == [("bigint", 2**63 - 1)] * len(generated)
        for table in ("tracking_runs", "tracking_metric_chunks"):
            next_ids_just_below_int32_max(engine, table)
        with engine.begin() as connection:
            run_pk = connection.execute(
                insert(RunRow.__table__).values(**run | {"run_id": "s" * 32}, start_time_us=2)
            ).inserted_primary_key[0]
            chunks = [
                connection.execute(
                    insert(MetricChunkRow.__table__).values(**_chunk(run_pk))
                ).inserted_primary_key[0]
                for _ in range(3)
            ]
        assert (run_pk, chunks) == (INT32_MAX - 1, [INT32_MAX - 1, INT32_MAX, INT32_MAX + 1])
    finally:
        engine.dispose()


_MIGRATE_AT = """
import sys, time
from control_plane.db import create_db_engine, upgrade_to_head
engine = create_db_engine(sys.argv[1])
with engine.connect():  # connected before the start, so both reach the migration together
    pass
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
upgrade_to_head(engine)
"""


def test_two_processes_migrating_an_empty_database_together_both_succeed(db_url: str) -> None:
    """Two control planes starting together: one migrates, the other waits and finds the database at
    head. On PostgreSQL nothing serialized them and one failed creating a table the other had just
    created (duplicate key in pg_type)."""
    start_at = str(time.time() + 3)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _MIGRATE_AT, db_url, start_at], stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    errors = [process.communicate(timeout=120)[1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], [e.strip()[-300:] for e in errors]
    engine = create_db_engine(db_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection)
            assert compare_metadata(context, all_tables) == []
            assert len(context.get_current_heads()) >= 1
    finally:
        engine.dispose()


def test_a_read_session_reads_one_snapshot_while_another_transaction_commits(
    engine: Engine, registry: FeatureRegistry
) -> None:
    """The revision and the content a reader reads belong together even when a change commits between
    the two statements (under PostgreSQL's READ COMMITTED the second statement saw the change: a
    registry watcher got revision N with N+1's content). Write sessions still see the newest commits."""
    sessions = create_session_factory(engine)
    with read_session(sessions) as session:
        revision = current_revision(session)
        registry.create_entity(entity("driver"))  # commits, and bumps the revision, in its own session
        assert session.scalars(select(EntityRow.name)).all() == []
        assert current_revision(session) == revision
        if engine.dialect.name == "postgresql":  # and it is read-only
            with pytest.raises(sqlalchemy.exc.InternalError, match="read-only transaction"):
                session.execute(update(EntityRow).values(description="x"))
    with write_session(sessions) as session:
        assert current_revision(session) == revision + 1
        assert session.scalars(select(EntityRow.name)).all() == ["driver"]
    with read_session(sessions) as session:
        assert current_revision(session) == revision + 1
