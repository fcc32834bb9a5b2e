"""Settings of one ``aetherctl`` run: where the services are (or go), read from ``AETHER_*`` variables;
command-line flags override them."""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from control_plane.defaults import DEFAULT_LISTEN_ADDR, DEFAULT_REDIS_URL, default_db_url

DEFAULT_DATA_PLANE_ADDR = "127.0.0.1:50052"


@dataclass(frozen=True)
class CliSettings:
    home: Path
    db_url: str
    redis_url: str
    control_plane_addr: str
    data_plane_addr: str
    timeout_s: float = 10.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CliSettings:
        env = os.environ if environ is None else environ
        home = Path(env.get("AETHER_HOME") or Path.home() / ".aether").expanduser()
        return cls(
            home=home,
            db_url=env.get("AETHER_DB_URL") or default_db_url(home),
            redis_url=env.get("AETHER_REDIS_URL") or DEFAULT_REDIS_URL,
            control_plane_addr=env.get("AETHER_CONTROL_PLANE_ADDR") or DEFAULT_LISTEN_ADDR,
            data_plane_addr=env.get("AETHER_DATA_PLANE_ADDR") or DEFAULT_DATA_PLANE_ADDR,
        )


def actor() -> str:
    """Who runs this command, as the audit log names them when auth is off (with auth on, the token's
    principal is the actor and the server ignores this). A uid without a passwd entry and without
    ``USER``/``LOGNAME`` (``docker run --user 1234``) is ``uid:1234``: getpass raised KeyError (OSError
    from Python 3.13), a traceback for every command."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"
