"""The metadata database's clock: what leases shared by several processes (ingestion intents, the job
supervisors' leader lease) are stamped and expired by."""

from __future__ import annotations

import time

from sqlalchemy import text
from sqlalchemy.orm import Session


def database_now_us(session: Session) -> int:
    """The database's clock, in µs since the epoch: the one clock every process sharing it reads, so a
    lease does not depend on the holding and the taking-over hosts' clocks agreeing. SQLite's file is on
    one host: its ``julianday('now')`` (milliseconds) is that host's clock."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        query = "SELECT CAST(floor(extract(epoch FROM clock_timestamp()) * 1000000) AS BIGINT)"
    elif dialect == "sqlite":
        query = "SELECT CAST(round((julianday('now') - 2440587.5) * 86400000000.0) AS INTEGER)"
    else:
        return time.time_ns() // 1000
    return int(session.execute(text(query)).scalar_one())
