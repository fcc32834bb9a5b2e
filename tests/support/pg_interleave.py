"""Two PostgreSQL transactions interleaved by hand, for tests of races that timing alone hits only now
and then: :class:`HeldTransaction` writes rows in a transaction of its own and keeps it open, so that
the code under test does not see them when it reads (READ COMMITTED) but blocks on them when it inserts
the same key; :meth:`HeldTransaction.commit_once_blocked` commits as soon as PostgreSQL reports the code
under test waiting on that transaction's lock, so the code under test always meets the conflict after
its own check, at its insert."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session, sessionmaker

_WAITERS = text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))")


class HeldTransaction:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection = engine.connect()
        self._transaction = self._connection.begin()
        self._pid: int = self._connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def execute(self, statement: Any, parameters: Any = None) -> Any:
        return self._connection.execute(statement, parameters)

    def sessions(self) -> sessionmaker[Session]:
        """Sessions inside the held transaction, for running the code under test's own write path in it
        (another request that has written and not yet committed): a session joins the transaction and
        its commit leaves it open, as SQLAlchemy does for a session bound to a connection already in
        one."""
        return sessionmaker(bind=self._connection, expire_on_commit=False)

    def session(self) -> Session:
        """An ORM session inside the held transaction, for code that takes one: what it flushes stays
        uncommitted until the held transaction commits."""
        return Session(bind=self._connection)

    def commit(self) -> None:
        self._transaction.commit()
        self._connection.close()

    def wait_for_waiter(self, passed: Callable[[], bool], timeout_s: float = 20.0) -> bool:
        """Waits until another backend waits on one of this transaction's locks (True) or ``passed()``
        says the code under test went on without waiting (False): a race a test means to show either
        way, polled on both conditions, never on a sleep that guesses how long the other side takes."""
        deadline = time.monotonic() + timeout_s
        with self._engine.connect() as watcher:
            while not self._has_waiter(watcher):
                if passed():
                    return False
                if time.monotonic() > deadline:
                    raise AssertionError(f"neither blocked on the held transaction nor done in {timeout_s} s")
                time.sleep(0.01)
        return True

    def _has_waiter(self, watcher: Connection) -> bool:
        count = watcher.execute(_WAITERS, {"pid": self._pid}).scalar_one()
        watcher.rollback()  # a fresh snapshot of pg_stat_activity on the next poll
        return bool(count)

    def abandon(self) -> None:
        self._transaction.rollback()
        self._connection.close()

    def commit_once_blocked(self, timeout_s: float = 20.0) -> None:
        """Starts a thread that commits this transaction once another backend waits on one of its
        locks (or after ``timeout_s``, recording an error, so a test cannot hang)."""

        def run() -> None:
            try:
                self._wait_for_waiter(timeout_s)
            except BaseException as exc:  # reported by join(); the commit below still ends the wait
                self.error = exc
            finally:
                self.commit()

        self._thread = threading.Thread(target=run, name="held-transaction", daemon=True)
        self._thread.start()

    def _wait_for_waiter(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with self._engine.connect() as watcher:
            while not self._has_waiter(watcher):
                if time.monotonic() > deadline:
                    raise AssertionError(f"no backend blocked on the held transaction in {timeout_s} s")
                time.sleep(0.01)

    def join(self) -> None:
        """Waits for the commit; raises if nothing ever blocked on the held transaction (the test then
        did not exercise the race it means to)."""
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self.error is not None:
            raise self.error


def race_against(engine: Engine, hold: Callable[[HeldTransaction], None], call: Callable[[], Any]) -> Any:
    """Runs ``hold`` in a held transaction, then ``call`` (which must block on the held rows), committing
    the held transaction once ``call`` waits; returns what ``call`` returns, and raises what it raises."""
    held = HeldTransaction(engine)
    try:
        hold(held)
    except BaseException:
        held.abandon()
        raise
    held.commit_once_blocked()
    try:
        return call()
    finally:
        held.join()
