"""How many rows ingestion counted as stored offline into a view version: every run's ``accepted`` (batch,
stream and replay runs alike), each counted in the transaction that follows its rows' offline write
(``batch``, ``chunk_commit``, ``streaming/outbox``). The control plane's offline readers are given it
(``OfflineStore``'s ``counted``) to tell a view version with no data yet from a store whose folder for it
is gone: a missing root (an unmounted volume, another ``AETHER_OFFLINE_ROOT``) listed as no data, and a
training set was built with every feature null."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db import read_session
from control_plane.ingestion.tables import IngestionRunRow


def counted_rows(session: Session, view: str, version: int) -> int:
    """The rows every run of ``view`` version ``version`` counted accepted."""
    query = select(func.coalesce(func.sum(IngestionRunRow.accepted), 0)).where(
        IngestionRunRow.view == view, IngestionRunRow.version == version
    )
    return int(session.scalar(query) or 0)


def reader_counts(sessions: sessionmaker[Session]) -> Callable[[str, int], int]:
    """:func:`counted_rows` in a read session of its own (``OfflineStore``'s ``counted``)."""

    def counted(view: str, version: int) -> int:
        with read_session(sessions) as session:
            return counted_rows(session, view, version)

    return counted
