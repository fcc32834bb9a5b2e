"""Where Aether's processes listen and keep their state unless told otherwise.

A leaf module (standard library only): ``aetherctl`` reads these for every command, and
``control_plane.settings``, which re-exports them, imports the control plane's Redis clients, auth and
offline store, about half a second of the CLI's start when it read them from there."""

from __future__ import annotations

from pathlib import Path

DEFAULT_LISTEN_ADDR = "127.0.0.1:50051"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def default_db_url(home: Path) -> str:
    """The embedded default: one SQLite file in the local state folder."""
    return f"sqlite:///{home / 'aether.db'}"
