"""Alembic environment. Uses the connection handed over in ``config.attributes["connection"]`` (see
``control_plane.db.migrate.upgrade_to_head``), or else opens one from ``sqlalchemy.url``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from control_plane.db.engine import create_db_engine, write_connection
from control_plane.db.schema import metadata

config = context.config

#: The PostgreSQL advisory lock a migration holds (one per database; any constant no other code takes).
MIGRATION_LOCK_KEY = 0x4145_5448_4552_0001  # "AETHER" 0001


def _run(connection: Connection) -> None:
    # Batch mode: SQLite alters tables by copying them, which later migrations will need.
    # Transactional DDL: Alembic assumes none for SQLite only because of the sqlite3 module's own
    # transaction handling, which our engine turns off; so the whole upgrade is one transaction.
    context.configure(
        connection=connection, target_metadata=metadata, render_as_batch=True, transactional_ddl=True
    )
    with context.begin_transaction():
        # Two processes starting together must not both migrate: the second has to wait, then read the
        # version the first committed and find nothing to do. On SQLite the transaction's BEGIN IMMEDIATE
        # (write_connection) takes the database's write lock. PostgreSQL has no such lock, and without
        # one both created the same tables and one failed (duplicate key in pg_type): this lock, taken
        # before Alembic reads alembic_version, is held until the transaction ends.
        if connection.dialect.name == "postgresql":
            connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
        context.run_migrations()


def _run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database: pass a connection in config.attributes or set sqlalchemy.url")
    engine = create_db_engine(url)
    try:
        with write_connection(engine) as opened:
            _run(opened)
    finally:
        engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    _run_online()
