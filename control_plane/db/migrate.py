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
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from clients.env_values import ConfigurationError
from clients.uris import redact_uri
from control_plane.db.engine import create_db_engine, write_connection

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: Alembic's default, which ``migrations/env.py`` keeps.
_VERSION_TABLE = "alembic_version"


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


def open_database(
    url: str, busy_timeout_s: float = 30.0, *, migrate: bool = True, pool_size: int | None = None
) -> Engine:
    """An engine for ``url``, its database brought to the newest schema; for a URL that cannot be used
    (not a URL, no driver, a SQLite file that cannot be created, a server that does not answer, a
    database migrated by a newer release) a ConfigurationError naming AETHER_DB_URL/--db-url and the URL
    without its password, which the entrypoints print as one line, where a traceback of 30 to 140
    lines hid the cause.

    ``migrate=False`` is for a process that works on the database a control plane keeps (the stream
    materializer): it neither creates nor migrates one, and refuses a database that is missing or not at
    the newest schema. Otherwise a URL that missed the stack's database (a shell without its AETHER_HOME,
    a mistyped path) made a new, empty one, and the process went on to report the stack's views as not
    found. ``pool_size``: see :func:`create_db_engine`."""
    if not migrate:
        _refuse_a_missing_sqlite_file(url)
    try:
        engine = create_db_engine(url, busy_timeout_s, pool_size)
    # ValueError/TypeError: SQLAlchemy's own parse of a port that is not a number, or of a bad query
    # parameter (?timeout=abc), raised bare.
    except (ArgumentError, ImportError, OSError, ValueError, TypeError) as exc:
        raise _unusable(url, exc) from exc
    try:
        if migrate:
            upgrade_to_head(engine)
        else:
            _check_at_head(engine, url)
    except (DBAPIError, CommandError, OSError) as exc:
        engine.dispose()
        raise _unusable(url, exc) from exc
    except ConfigurationError:
        engine.dispose()
        raise
    return engine


def shown_url(url: str) -> str:
    """``url`` as messages show it: without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError, TypeError):
        return redact_uri(url)


def _refuse_a_missing_sqlite_file(url: str) -> None:
    """Checked before the engine exists: connecting creates a missing SQLite file (and
    ``create_db_engine`` its folder)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError, TypeError):
        return  # open_database reports the URL itself
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    if not Path(parsed.database).expanduser().is_file():
        raise ConfigurationError(
            f"AETHER_DB_URL/--db-url {shown_url(url)!r}: no such database file; give the URL of the "
            "database the control plane uses (it creates and migrates it when it starts)"
        )


def _check_at_head(engine: Engine, url: str) -> None:
    """ConfigurationError unless the database's schema revisions are the newest this release knows."""
    script = ScriptDirectory.from_config(alembic_config())
    with engine.connect() as connection:
        current = _revisions(connection)
    if current == set(script.get_heads()):
        return
    if not current:
        reason = "it holds no Aether schema; give the URL of the database the control plane uses"
    elif current - {revision.revision for revision in script.walk_revisions()}:
        reason = "it was migrated by a newer Aether; run that release or a newer one"
    else:
        reason = "it is at an older schema; start this release's control plane on it, which migrates it"
    raise ConfigurationError(f"AETHER_DB_URL/--db-url {shown_url(url)!r}: {reason}")


def _revisions(connection: Connection) -> set[str]:
    """The revisions in Alembic's own table, read directly: Alembic's MigrationContext logs two INFO
    lines as it starts, which would read as if a migration were being run."""
    if not inspect(connection).has_table(_VERSION_TABLE):
        return set()
    return set(connection.scalars(text(f"SELECT version_num FROM {_VERSION_TABLE}")))


def _unusable(url: str, exc: BaseException) -> ConfigurationError:
    shown = shown_url(url)
    if isinstance(exc, CommandError) and "Can't locate revision" in str(exc):
        reason = f"it was migrated by a newer Aether ({exc}); run that release or a newer one"
    elif isinstance(exc, DBAPIError):  # the driver's own words, without SQLAlchemy's SQL and links
        reason = f"cannot open it: {_first_line(exc.orig or exc)}"
    elif isinstance(exc, OSError):
        reason = f"cannot create its folder: {exc}"
    elif isinstance(exc, ImportError):
        reason = f"its database driver is not installed ({exc})"
    else:
        reason = _first_line(exc)
    return ConfigurationError(f"AETHER_DB_URL/--db-url {shown!r}: {reason}")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().partition("\n")[0]


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
        open_database(args.db_url)
    else:
        command.revision(alembic_config(args.db_url), message=args.message, autogenerate=args.autogenerate)


if __name__ == "__main__":
    main()
