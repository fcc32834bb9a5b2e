"""The metadata database: models, engine and sessions, migrations."""

from control_plane.db.engine import create_db_engine, create_session_factory, read_session, write_session
from control_plane.db.migrate import open_database, upgrade_to_head

__all__ = [
    "create_db_engine",
    "create_session_factory",
    "open_database",
    "read_session",
    "upgrade_to_head",
    "write_session",
]
