"""Alembic environment. Uses the connection handed over in ``config.attributes["connection"]`` (see
``control_plane.db.migrate.upgrade_to_head``), or else opens one from ``sqlalchemy.url``."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from control_plane.db.engine import create_db_engine, write_connection
from control_plane.db.schema import metadata

config = context.config


def _run(connection: Connection) -> None:
    # Batch mode: SQLite alters tables by copying them, which later migrations will need.
    # Transactional DDL: Alembic assumes none for SQLite only because of the sqlite3 module's own
    # transaction handling, which our engine turns off; so the whole upgrade is one transaction, taken
    # with the write lock, and two processes starting together cannot both migrate.
    context.configure(
        connection=connection, target_metadata=metadata, render_as_batch=True, transactional_ddl=True
    )
    with context.begin_transaction():
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
