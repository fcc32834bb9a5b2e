"""``python -m control_plane``: runs the control plane until SIGTERM or SIGINT.

Prints exactly one line, ``aether control plane listening on HOST:PORT``, once it serves."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import re
import signal
import sys
import urllib.parse
from collections.abc import Coroutine, Mapping
from typing import Any

from clients.env_values import ConfigurationError
from clients.errors import AetherError
from control_plane.cli.numbers import positive_seconds
from control_plane.ingestion.streaming import kafka_options
from control_plane.jobs.settings import (
    JOB_GROUP_VARIABLE,
    JOB_USER_VARIABLE,
    job_uid_range_from_env,
    job_user_from_env,
)
from control_plane.jobs.uid_range import JOB_UID_RANGE_VARIABLE
from control_plane.monitoring.settings import MonitoringSettings
from control_plane.process_secrets import withdraw_secrets
from control_plane.redis_clients import DEFAULT_REDIS_TIMEOUT_S
from control_plane.server import start_server
from control_plane.settings import REDIS_TIMEOUT_VARIABLE, ControlPlaneSettings


def parse_settings(
    argv: list[str] | None = None, environ: Mapping[str, str] | None = None
) -> ControlPlaneSettings:
    """Settings from ``environ`` (default: the process environment), flags overriding them."""
    parser = argparse.ArgumentParser(
        prog="python -m control_plane", description="Runs the Aether control plane."
    )
    parser.add_argument(
        "--listen", metavar="HOST:PORT", help="address to serve on (port 0 picks a free port)"
    )
    parser.add_argument("--db-url", metavar="URL", help="metadata database (SQLAlchemy URL)")
    parser.add_argument("--redis-url", metavar="URL", help="online store")
    parser.add_argument(
        "--redis-timeout-s",
        metavar="SECONDS",
        type=positive_seconds,
        help=f"cap on one wait for Redis (default: {REDIS_TIMEOUT_VARIABLE}, or {DEFAULT_REDIS_TIMEOUT_S:g})",
    )
    # The materializer's flag: a quarantine replay publishes to a kafka:// view's topic with the same
    # client settings its materializer consumes with (a secured cluster refuses a client without them).
    kafka_options.add_flag(parser)
    parser.add_argument(
        "--job-user",
        metavar="USER",
        help=f"OS user (name or uid) jobs run as (default: {JOB_USER_VARIABLE}, else this process's)",
    )
    parser.add_argument(
        "--job-group",
        metavar="GROUP",
        help=f"group jobs run as (default: {JOB_GROUP_VARIABLE}, else the job user's primary group)",
    )
    parser.add_argument(
        "--job-uid-range",
        metavar="FIRST-LAST",
        help=f"uids jobs run as, one per running attempt (default: {JOB_UID_RANGE_VARIABLE})",
    )
    args = parser.parse_args(argv)
    job_flags = {
        JOB_USER_VARIABLE: args.job_user,
        JOB_GROUP_VARIABLE: args.job_group,
        JOB_UID_RANGE_VARIABLE: args.job_uid_range,
    }
    job_flags = {name: value for name, value in job_flags.items() if value}
    # Checked here, before anything starts: an unknown user, a bad range, or a process that may not switch
    # users, is one line naming the variable, and jobs never run as the control plane instead.
    job_env = {**(os.environ if environ is None else environ), **job_flags}
    job_user = job_user_from_env(job_env)
    uid_range = job_uid_range_from_env(job_env)
    if job_user is not None or uid_range is not None:
        who, setting = (
            (f"the job user {job_user.name}", JOB_USER_VARIABLE)
            if job_user is not None
            else ("the jobs' uids", JOB_UID_RANGE_VARIABLE)
        )
        if flag := secret_flag(args):
            raise ConfigurationError(
                f"{flag} holds a password, which every local user, {who} included, reads in this"
                f" process's command line (/proc/PID/cmdline): with {setting} set, give it in"
                f" {SECRET_FLAGS.get(flag, kafka_options.FILE_VARIABLE)} instead"
            )
    if environ is None:  # the jobs service reads its settings from the environment as the server builds it
        os.environ.update(job_flags)
    settings = ControlPlaneSettings.from_env(environ)
    # Read again by the monitor as the server builds it; read here too so that a bad one (its metrics
    # address among them) is one line before the database is opened and anything runs.
    MonitoringSettings.from_env(os.environ if environ is None else environ)
    overrides = {
        "listen_addr": args.listen,
        "db_url": args.db_url,
        "redis_url": args.redis_url,
        "redis_timeout_s": args.redis_timeout_s,
    }
    kafka = kafka_options.merged(settings.kafka_options, args.kafka_option)
    return dataclasses.replace(
        settings, kafka_options=kafka, **{key: value for key, value in overrides.items() if value}
    )


#: The flags that may hold a password, and the variable to give it in instead.
SECRET_FLAGS = {"--db-url": "AETHER_DB_URL", "--redis-url": "AETHER_REDIS_URL"}


def secret_flag(args: argparse.Namespace) -> str | None:
    """The first flag of ``args`` that holds a password (a URL's ``user:PASSWORD@`` or ``password=``
    query parameter, a Kafka option whose key names a password or secret), or None. The command line is
    world-readable (``/proc/PID/cmdline``) where the environment is not (``process_secrets``)."""
    for flag, url in (("--db-url", args.db_url), ("--redis-url", args.redis_url)):
        if url and _url_has_password(url):
            return flag
    for key, _ in args.kafka_option:
        if "password" in key.lower() or "secret" in key.lower():
            return f"--kafka-option {key}"
    return None


#: ``user:PASSWORD@`` after the scheme, read as the database and Redis clients read it: a password may
#: hold ``/``, ``?`` or ``#``, where ``urlsplit`` ends the host part and finds no password (SQLAlchemy's
#: ``make_url`` takes ``postgresql://u:s3cr/et@db/x`` as password ``s3cr/et``). Cautious: a colon and then
#: an ``@`` anywhere after the scheme count, a rare URL without a password among them.
_USER_PASSWORD = re.compile(r"://[^@]*:[^@]*@")


def _url_has_password(url: str) -> bool:
    if _USER_PASSWORD.search(url):
        return True
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password:
            return True
    except ValueError:  # a malformed URL: its own error comes later
        return False
    return any(key.lower() == "password" for key, _ in urllib.parse.parse_qsl(parts.query))


async def serve(settings: ControlPlaneSettings) -> None:
    handle = await start_server(settings)
    print(f"aether control plane listening on {handle.address}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await handle.stop()


def run(main: Coroutine[Any, Any, None]) -> None:
    """Runs ``main`` on uvloop when it is installed, else on the default event loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = parse_settings(argv)
    except ValueError as error:
        # Reading settings only raises for a configuration to fix (a token file, a TLS pair, a Kafka
        # options file): one line naming it, not a traceback.
        print(f"python -m control_plane: error: {error}", file=sys.stderr)
        return 2
    if settings.auth.enabled:
        # Read once: out of the environment jobs could read through /proc (see process_secrets).
        withdraw_secrets()
    try:
        run(serve(settings))
    except ConfigurationError as error:
        # The background loops (canary, monitor, retraining, jobs) read their AETHER_* settings as the
        # server builds its services: a wrong one is the same one line naming the variable, not a traceback.
        print(f"python -m control_plane: error: {error}", file=sys.stderr)
        return 2
    except AetherError as error:
        # A refusal to start that names its cause (a port in use: FAILED_PRECONDITION), one line and
        # status 1, as `python -m data_plane` answers it.
        print(f"python -m control_plane: error: {error.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
