"""Schema migrations with Alembic, configured in code so that no ``alembic.ini`` is needed at run time.

Developers add a migration by bringing a scratch database to head and letting Alembic compare it with
the models::

    python -m control_plane.db.migrate --db-url sqlite:////tmp/scratch.db upgrade
    python -m control_plane.db.migrate --db-url sqlite:////tmp/scratch.db revision -m "what" --autogenerate

then review the generated file in ``migrations/versions``."""

from __future__ import annotations

import argparse
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from control_plane.db.engine import create_db_engine, write_connection

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(db_url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if db_url is not None:
        # ConfigParser interpolates "%": escape it so URL-encoded passwords survive.
        config.set_main_option("sqlalchemy.url", db_url.replace("%", "%%"))
    return config


def upgrade_to_head(engine: Engine) -> None:
    """Brings the database behind ``engine`` to the newest schema; a no-op when it is already there.
    The migration is one transaction that first takes a lock (SQLite: the write lock, by BEGIN IMMEDIATE;
    PostgreSQL: an advisory lock, see ``migrations/env.py``), so of two processes starting together one
    migrates and the other then finds the database at head."""
    config = alembic_config()
    with write_connection(engine) as connection:
        config.attributes["connection"] = connection
        # "heads": concerns add migrations on their own branches until they are merged.
        command.upgrade(config, "heads")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m control_plane.db.migrate")
    parser.add_argument("--db-url", required=True)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("upgrade")
    revision = sub.add_parser("revision")
    revision.add_argument("-m", "--message", required=True)
    revision.add_argument("--autogenerate", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "upgrade":
        upgrade_to_head(create_db_engine(args.db_url))
    else:
        command.revision(alembic_config(args.db_url), message=args.message, autogenerate=args.autogenerate)


if __name__ == "__main__":
    main()
