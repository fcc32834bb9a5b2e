"""The loop's previous tick per deployment, where the schedule rule's window starts.

It lives in SQL rather than in the loop's memory: after a restart the first tick's window then starts at
the last tick before the restart, so a cron minute that fell during the downtime (or between the last
tick and the first one after it) still fires, once, instead of being skipped. Loop bookkeeping, not a
change anyone made, so it is not audited.
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from control_plane.db import read_session, write_session
from control_plane.retraining.tables import RetrainingTickRow


def previous(sessions: sessionmaker[Session], deployment: str) -> int:
    """The stored tick of ``deployment`` (µs), or 0 when the loop never decided for it."""
    with read_session(sessions) as session:
        row = session.get(RetrainingTickRow, deployment)
        return row.at_us if row is not None else 0


def record(sessions: sessionmaker[Session], deployment: str, at_us: int) -> None:
    with write_session(sessions) as session:
        row = session.get(RetrainingTickRow, deployment)
        if row is None:
            session.add(RetrainingTickRow(deployment=deployment, at_us=at_us))
        else:
            row.at_us = at_us
