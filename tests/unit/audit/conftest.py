"""A migrated metadata database per test (SQLite and PostgreSQL, from ``db_url``) and helpers to append
to and tamper with its audit log."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db import create_session_factory


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return create_session_factory(engine)
