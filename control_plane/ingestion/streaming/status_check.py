"""The stream materializer's look at its view version's status in SQL (``version_gate.gone``), made every
``status_every_s`` busy or idle, surviving a metadata database that is briefly unavailable.

An idle materializer ran no SQL before that check (an empty outbox drains without a query) and so
outlived a PostgreSQL restart; the check, unretried, made it exit with ``OperationalError`` on the first
one. A read the database cannot answer (down, restarting, locked, its pool full: the failures
``control_plane.background`` and ``clients.database_errors`` call transient) now counts as "still takes
rows", as it did before the check existed, and is tried again at the next check; the first failure of a
run of them is logged, then one in every ``LOG_EVERY`` (with the count), and the first answer after them.
Once the database answers, a retired or deleted version stops the materializer as before. Any other
failure (a bug, a schema the code does not know) still raises. A batch's commit does not count a read
that fails as "still takes rows": it reads the status itself and waits for the database
(``commit_gate.py``), so no batch is committed that a retire during the outage should have stopped.
"""

from __future__ import annotations

import logging

import sqlalchemy.exc
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.database_errors import database_unavailable
from control_plane.ingestion.version_gate import gone

_log = logging.getLogger("aether.ingestion.stream")
#: One warning per this many failed checks in a row (the first is always logged): at the default
#: ``status_every_s`` of 1 s, one line every 10 minutes of an outage.
LOG_EVERY = 600
_UNAVAILABLE = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError)


class StatusCheck:
    def __init__(self, sessions: sessionmaker[Session], view: pb.FeatureView) -> None:
        self._sessions, self._view = sessions, view
        self.failures = 0  # failed checks in a row

    def gone(self) -> str | None:
        """``version_gate.gone`` of the view version; None too when the database cannot answer now."""
        try:
            state = gone(self._sessions, self._view)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            if not isinstance(exc, _UNAVAILABLE) and database_unavailable(exc) is None:
                raise
            self.failures += 1
            if self.failures == 1 or self.failures % LOG_EVERY == 0:
                _log.warning(
                    "%s v%d: the version's status could not be read (%d checks in a row), trying again at"
                    " the next check: %s",
                    self._view.spec.name, self._view.version, self.failures,
                    database_unavailable(exc) or str(exc).partition("\n")[0],
                )  # fmt: skip
            return None
        if self.failures:
            _log.info(
                "%s v%d: the version's status reads again, after %d failed checks",
                self._view.spec.name, self._view.version, self.failures,
            )  # fmt: skip
            self.failures = 0
        return state
