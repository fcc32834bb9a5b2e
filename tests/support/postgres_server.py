"""A throwaway PostgreSQL cluster on a free loopback port, for tests: ``initdb`` into a temporary folder,
``pg_ctl start``, one fresh schema per test in one test database (see :meth:`PostgresServer.fresh_url`),
``pg_ctl stop`` and the folder removed at the end (by a process of its own, not waited for).

PostgreSQL refuses to run as root, so when the tests run as root (CI containers) every server command
runs as the ``postgres`` OS user through ``runuser``. Durability is off (``fsync``, ``synchronous_commit``,
``full_page_writes``): the cluster is discarded anyway, and tests run several times faster.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import psycopg

from tests.support.ports import HeldPort

_SUPERUSER = "aether"
_TEST_DATABASE = "aether_tests"
_MISSING = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found under /usr/lib/postgresql/*/bin or on PATH: "
    "run scripts/bootstrap.sh (it installs Debian's postgresql package) or `apt-get install postgresql`"
)


def find_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` (Debian's layout), else the folder of ``initdb``
    on PATH; RuntimeError naming the fix when neither exists."""

    def version(path: str) -> int:
        name = Path(path).parent.name
        return int(name) if name.isdigit() else -1

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    for candidate in candidates:
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    initdb = shutil.which("initdb")
    if initdb is not None and shutil.which("pg_ctl") is not None:
        return Path(initdb).resolve().parent
    raise RuntimeError(_MISSING)


class PostgresServer:
    def __init__(self, port: int | None = None) -> None:
        self.bin_dir = find_bin_dir()
        # A port of its own is held (``HeldPort``; PostgreSQL binds with SO_REUSEADDR, beside the hold)
        # until close(): picked free and let go, it was another test worker's to take during initdb
        # (seconds), or while the cluster is down between stop() and start_again().
        self._held: HeldPort | None = None
        if port is None:
            self._held = HeldPort()
            port = self._held.port
        self.port: int = port
        self.dir = Path(tempfile.mkdtemp(prefix="aether-postgres-"))
        self.data_dir = self.dir / "data"
        self.log_file = self.dir / "server.log"
        self._as_postgres = os.geteuid() == 0
        self._names = itertools.count(1)
        self._started = False
        if self._as_postgres:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root but there is no `postgres` OS user to run PostgreSQL as: " + _MISSING
                ) from None
            os.chown(self.dir, user.pw_uid, user.pw_gid)

    def _run(self, *args: str) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log = self.log_file.read_text() if self.log_file.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}{log}")

    def start(self, timeout: float = 30.0) -> None:
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", _SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync"
        )
        self._pg_ctl_start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self._dsn("postgres"), connect_timeout=2, autocommit=True) as connection:
                    connection.execute(f'CREATE DATABASE "{_TEST_DATABASE}"')
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def start_again(self) -> None:
        """Starts the cluster after ``stop``, its databases kept (after an immediate stop it replays its
        WAL first, as after a crash). Returns once it accepts connections."""
        if not self._started:
            self._pg_ctl_start()

    def _pg_ctl_start(self) -> None:
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.dir}",
                "-c max_connections=300",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
            ]
        )
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options, "-w", "start")
        self._started = True

    def _dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={_SUPERUSER} dbname={database}"

    def url(self, database: str, schema: str | None = None) -> str:
        """A SQLAlchemy URL for ``database`` through the psycopg 3 driver; with ``schema``, every
        connection made from it works in that schema (its ``search_path``)."""
        url = f"postgresql+psycopg://{_SUPERUSER}@127.0.0.1:{self.port}/{database}"
        return url if schema is None else f"{url}?options={quote(f'-csearch_path={schema}')}"

    def fresh_url(self) -> str:
        """The URL of a new, empty schema in the shared test database: as good as a fresh database for
        the code under test (tables, indexes, sequences and Alembic's version table all live in the
        schema), but created in a millisecond and with no files to delete, where ``CREATE DATABASE``
        copies a template of about a thousand files each time."""
        schema = f"test_{next(self._names)}"
        with psycopg.connect(self._dsn(_TEST_DATABASE), autocommit=True) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')
        return self.url(_TEST_DATABASE, schema)

    def icu_database_url(self, icu_locale: str = "en-US") -> str:
        """The URL of a new database whose text sorts in ICU's ``icu_locale`` (``en-US``: the order of a
        server initialized in a US English locale, where ``_`` and ``-`` sort before digits, unlike the
        byte order of SQLite and of this cluster's own databases). A database, not a schema: a
        collation is chosen when a database is created."""
        name = f"test_icu_{next(self._names)}"
        with psycopg.connect(self._dsn("postgres"), autocommit=True) as connection:
            connection.execute(
                f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C'"
                f" LOCALE_PROVIDER icu ICU_LOCALE '{icu_locale}'"
            )
        return self.url(name)

    def stop(self, mode: str = "immediate") -> None:
        """Stops the cluster: ``immediate`` as a crash (commits of the last ~200 ms may be lost, as the
        cluster runs with ``synchronous_commit=off``), ``fast`` as an administrator's restart (clients
        disconnected, everything committed kept)."""
        if self._started:
            self._started = False
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def close(self) -> None:
        """Stops the cluster and removes its folder, without waiting for the removal: a session's
        cluster is a few hundred MB of files written moments ago (fsync off), and deleting them while
        the disk wrote back the other workers' data took 2-15 s, in the teardown of each pytest worker's
        last test (the suite's wall-clock tail; ``pg_ctl stop -m immediate`` itself takes ~0.1 s)."""
        try:
            self.stop()
        finally:
            if self._held is not None:
                self._held.close()
            remove_later(self.dir)


def remove_later(folder: Path) -> None:
    """Removes ``folder`` in a process of its own (``rm -rf``, detached: it outlives this one), or here and
    now when that cannot start."""
    try:
        subprocess.run(
            ["sh", "-c", 'rm -rf -- "$1" &', "sh", str(folder)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        shutil.rmtree(folder, ignore_errors=True)
