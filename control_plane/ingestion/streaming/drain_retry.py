"""The stream materializer's outbox drain, waiting out a metadata database that is briefly unavailable.

A drain (``outbox.drain``) writes the committed batches' history rows to the offline store and then
records their quarantine rows, run counters and receipt ids in SQL. A busy materializer drains every
``drain_every`` batches or ``drain_interval_s``; the drain was not retried, so a PostgreSQL restart (or a
SQLite file locked past its busy timeout) made it exit with ``OperationalError``, where its idle path
already waits such an outage out (``status_check.py``) and a Redis outage is waited out everywhere
(``RedisStreamSource.retrying``). A drain that fails because the database is unavailable (what
``clients.database_errors.database_unavailable`` calls transient: unreachable, restarting, shutting down,
locked, its pool full) is now tried again, after 0.05 s, then longer up to 2 s between tries, until the
database answers; the first failure of a run of them is logged, then one in every ``LOG_EVERY`` (with
the count), and the first success after them. The materializer reads nothing new meanwhile: the stream
keeps the events, and the outbox does not grow. Any other failure (a bug, a schema the code does not
know, the offline store refusing the rows) still raises.

Nothing is lost or counted twice, as after a crash mid-drain (``outbox.py``): a receipt leaves the outbox
only after the SQL transaction that recorded it committed, and a retry finds the receipts that
transaction recorded (a commit whose answer the outage cut off included) and only removes them. A retry
after the offline write but before the SQL commit writes those history rows again; the failed try's files
are removed at once when its transaction failed before COMMIT, and otherwise by the intent recovery once
their intent has lapsed, unless that COMMIT landed (``outbox.py``).

A batch's commit, which reads its version's status in SQL (``commit_gate.py``), waits an outage out the
same way (``COMMIT``): nothing of the batch is committed meanwhile, and its messages stay pending in the
stream; a stop asked then leaves them there for the next start.

A stop asked meanwhile (``stop``, the materializer's SIGTERM/SIGINT event) ends the wait at once with
:class:`~control_plane.ingestion.streaming.stops.StopAsked`: the receipts stay in the outbox for the next
start, rather than a shutdown (a rolling restart, an orchestrator's stop) hanging until the database is
back and then being killed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import sqlalchemy.exc

from clients.database_errors import database_unavailable
from control_plane.ingestion.streaming.stops import StopAsked

T = TypeVar("T")
_log = logging.getLogger("aether.ingestion.stream")
#: Seconds between tries, the last one repeated.
RETRY_SECONDS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
#: One warning per this many failed tries in a row (the first is always logged): at 2 s apart, one line
#: every 10 minutes of an outage.
LOG_EVERY = 300


@dataclass(frozen=True)
class Waited:
    """What a wait is for, in its log lines and its ``StopAsked``."""

    failed: str  # "<name>: {failed} (N tries in a row), trying again"
    again: str  # "<name>: {again}, after N failed tries"
    kept: str  # "<name>: stopped while the metadata database was unavailable (...); {kept}"


OUTBOX = Waited(
    "the outbox could not be drained",
    "the outbox drains again",
    "the outbox keeps its committed batches for the next start",
)
#: A batch's commit, which reads its version's status in SQL first (``commit_gate.py``).
COMMIT = Waited(
    "a batch's commit could not read its version's status in SQL, or end that transaction",
    "batches commit again",
    # Not "was not committed": a PostgreSQL connection lost after the Redis transaction ran fails the
    # gate's own COMMIT, so the batch may be in (its receipt then drains at the next start).
    "a batch's commit did not finish; whatever of it is not committed stays pending in the stream, and a"
    " committed receipt drains at the next start",
)


def draining(
    drain: Callable[[], T],
    name: str,
    stop: threading.Event | None = None,
    sleep: Callable[[float], None] = time.sleep,
    waited: Waited = OUTBOX,
) -> T:
    """Runs ``drain`` (``name``: the view version, for the log) until it returns, trying again while the
    metadata database is unavailable (see the module doc); returns what it returned. StopAsked when
    ``stop`` is set while it waits to try again. ``waited``: what the log lines say it waits for (the
    outbox's drain, or a batch's commit)."""
    failures = 0
    while True:
        try:
            drained = drain()
        except sqlalchemy.exc.SQLAlchemyError as exc:
            reason = database_unavailable(exc)
            if reason is None:
                raise
            failures += 1
            if failures == 1 or failures % LOG_EVERY == 0:
                _log.warning(
                    "%s: %s (%d tries in a row), trying again: %s", name, waited.failed, failures, reason
                )
            delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS)) - 1]
            if stop is None:
                sleep(delay)
            elif stop.is_set() or stop.wait(delay):
                raise StopAsked(
                    f"{name}: stopped while the metadata database was unavailable ({reason}); {waited.kept}"
                ) from exc
            continue
        if failures:
            _log.info("%s: %s, after %d failed tries", name, waited.again, failures)
        return drained
