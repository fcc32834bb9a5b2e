"""``aetherctl materializer run`` opens the metadata database itself, not through the control plane: it
must find the stack's database, never make a new one. A shell without the stack's AETHER_HOME, or a
mistyped ``--db-url``, created and migrated a new empty SQLite file (folders included), then reported the
stack's view as NOT_FOUND."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import text

from clients.env_values import ConfigurationError
from control_plane.db import create_db_engine, open_database
from control_plane.db.engine import write_connection
from control_plane.db.migrate import alembic_config, shown_url

REPO = Path(__file__).resolve().parents[3]


def materializer(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``aetherctl materializer run --view clicks ARGS`` in a shell whose HOME is ``tmp_path/home``
    and that exports no AETHER_HOME or AETHER_DB_URL (so the default is ``~/.aether/aether.db``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("AETHER_HOME", "AETHER_DB_URL")}
    env["HOME"] = str(tmp_path / "home")
    command = [sys.executable, "-m", "control_plane.cli.main", "materializer", "run", "--view", "clicks"]
    return subprocess.run(
        [*command, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )


def test_a_missing_default_database_is_refused_and_neither_it_nor_its_folder_created(tmp_path: Path) -> None:
    done = materializer(tmp_path)
    default = tmp_path / "home" / ".aether" / "aether.db"
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"error: AETHER_DB_URL/--db-url 'sqlite:///{default}': no such database file; give the URL of the "
        "database the control plane uses (it creates and migrates it when it starts)\n"
    )
    assert not default.exists()
    assert not default.parent.exists()  # ``~/.aether``: the materializer left it behind, empty


def test_a_mistyped_db_url_creates_no_folder_and_no_database(tmp_path: Path) -> None:
    typo = tmp_path / "typo" / "dir" / "x.db"
    done = materializer(tmp_path, "--db-url", f"sqlite:///{typo}")
    assert done.returncode == 2 and "no such database file" in done.stderr, done.stderr
    assert not (tmp_path / "typo").exists()


def test_a_database_without_the_aether_schema_is_refused_not_migrated(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE notes (text TEXT)")
    done = materializer(tmp_path, "--db-url", f"sqlite:///{other}")
    assert done.returncode == 2, done.stderr
    assert done.stderr.endswith(f"'sqlite:///{other}': it holds no Aether schema; give the URL of the "
                                "database the control plane uses\n")  # fmt: skip
    with sqlite3.connect(other) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert tables == {"notes"}


def test_a_view_not_found_names_the_database_that_was_searched(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'aether.db'}"
    open_database(url).dispose()  # as the control plane leaves it: migrated, no views yet
    done = materializer(tmp_path, "--db-url", url)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1].endswith(f"not found (in {url})"), done.stderr
    assert "alembic" not in done.stderr


def test_the_url_is_shown_without_its_password() -> None:
    shown = shown_url("postgresql+psycopg://aether:s3cret@db.internal:5432/aether")
    assert shown == "postgresql+psycopg://aether:***@db.internal:5432/aether"


def test_a_database_at_another_schema_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'aether.db'}"
    script = ScriptDirectory.from_config(alembic_config())
    first = next(r.revision for r in script.walk_revisions() if r.down_revision is None)
    engine = create_db_engine(url)
    with write_connection(engine) as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, first)
    with pytest.raises(ConfigurationError, match="it is at an older schema; start this release's"):
        open_database(url, migrate=False)
    with engine.begin() as connection:
        assert list(connection.scalars(text("SELECT version_num FROM alembic_version"))) == [first]
        connection.execute(text("UPDATE alembic_version SET version_num = 'from_the_future'"))
    engine.dispose()
    with pytest.raises(ConfigurationError, match="it was migrated by a newer Aether"):
        open_database(url, migrate=False)
