"""The retraining loop's label volume against a label (or the index row its label joins) stamped before a
tick and committed after it, on both backends: a real write transaction of the code under test held open
between its statements and its commit (the writer that stamped its row, then waited for the database).

The tick counts labels joined in ``(last trigger, now]`` and the next period starts at ``now``; a label
stamped before ``now`` but committed after the tick read was in neither period: invisible to the tick,
and stamped before the next period began. A tick now reads under the lock the label writers stamp under
(:func:`control_plane.monitoring.feedback.settled_labels`): it waits for the open writer, and counts
its label."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import monitoring_pb2 as mpb
from control_plane.db import create_session_factory
from control_plane.db.clock import database_now_us
from control_plane.db.engine import write_connection
from control_plane.monitoring.feedback import IndexedPrediction, index_predictions, record_feedback
from control_plane.retraining.observe import new_labels
from tests.support.pg_interleave import HeldTransaction

PREDICTION = IndexedPrediction("r1", 0, "eta", "eta", 1, "eta-v1", 1_800_000_000_000_000, [1.0], True)
LABEL = mpb.Feedback(request_id="r1", label=1.0)


class HeldSqliteWrite:
    """:class:`HeldTransaction` for SQLite: a write transaction (``BEGIN IMMEDIATE``) kept open. SQLite
    does not say who waits on its lock, so :meth:`wait_for_waiter` gives the code under test a moment
    to finish without it; the test's assertion holds whichever of the two happens first once fixed."""

    def __init__(self, engine: Engine) -> None:
        self._connection = write_connection(engine)
        self._transaction = self._connection.begin()

    def sessions(self) -> sessionmaker[Session]:
        return sessionmaker(bind=self._connection, expire_on_commit=False)

    def wait_for_waiter(self, passed: Callable[[], bool], timeout_s: float = 0.5) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if passed():
                return False
            time.sleep(0.01)
        return True

    def commit(self) -> None:
        self._transaction.commit()
        self._connection.close()


def database_us(engine: Engine) -> int:
    """The database's clock, which the writers stamp by: SQLite's has whole milliseconds, so an instant
    taken by the host's µs clock just before a write could come after the write's stamp."""
    time.sleep(0.002)  # more than one tick of SQLite's clock before and after: keep the instants apart
    with create_session_factory(engine)() as session:
        now_us = database_now_us(session)
    time.sleep(0.002)
    return now_us


@pytest.mark.parametrize("open_writer", ["label", "index row"])
def test_a_label_stamped_before_a_tick_and_committed_after_it_counts_in_exactly_one_period(
    engine: Engine, open_writer: str
) -> None:
    sessions = create_session_factory(engine)
    # The other half of the join is committed before the period: the open writer's stamp decides.
    if open_writer == "label":
        index_predictions(sessions, [PREDICTION])
    else:
        record_feedback(sessions, [LABEL])  # an orphan until its prediction is indexed
    since = database_us(engine)
    held: HeldTransaction | HeldSqliteWrite = (
        HeldTransaction(engine) if engine.dialect.name == "postgresql" else HeldSqliteWrite(engine)
    )
    if open_writer == "label":
        record_feedback(held.sessions(), [LABEL])
    else:
        index_predictions(held.sessions(), [PREDICTION])
    tick = database_us(engine)  # the tick's now: after the open writer's stamp, before its commit
    counted: list[int] = []
    reader = threading.Thread(target=lambda: counted.append(new_labels(sessions, "eta", since, tick)))
    reader.start()
    held.wait_for_waiter(passed=lambda: not reader.is_alive())
    held.commit()
    reader.join(timeout=60)
    assert not reader.is_alive()
    next_period = new_labels(sessions, "eta", tick, database_us(engine))
    assert (counted, next_period) == ([1], 0)
