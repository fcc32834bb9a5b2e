"""The leader lease of the job supervisors sharing one database: only its holder acts.

Two supervisors on one job store (a second control plane on the same ``AETHER_DB_URL``, or an old one
still alive during a restart) each launched, re-adopted, stopped and ended the same jobs. The lease is
one row (``job_supervisor_lease``, made by migration 0033): its holder, its expiry on the database's
clock (:func:`database_now_us`: the one clock every process sharing the database reads, so two hosts'
clocks are never compared) and its epoch.

* A supervisor acts in a tick only once :meth:`SupervisorLease.hold` says it holds the lease. ``hold``
  renews it every ``renew_s`` (``AETHER_JOBS_LEASE_RENEW_S``) to ``lease_s`` (``AETHER_JOBS_LEASE_S``)
  from the database's now; a supervisor that does not hold it reads the row (no write) and takes it over
  only once it has expired, one epoch higher. A crashed or hung leader stops renewing, so another takes
  over at most ``lease_s`` later; a live one's lease never expires while it renews. A supervisor that
  stops gives the lease up (expired at once), so the next one takes over without waiting.
* The epoch is the fencing token: every write transaction of a supervisor decision (a start, an end, a
  stop, a re-adoption) first calls :meth:`SupervisorLease.fence`, which reads the row (``FOR SHARE`` on
  PostgreSQL, so a takeover's update waits for the decision's commit; SQLite's write lock serializes them
  anyway) and raises :class:`LeaseLost` unless it still names this holder and the epoch it took. So a
  supervisor paused past its lease (a stopped process, a long GC, a host that froze) and then resumed
  mid-tick commits nothing once another has taken over: either its decision commits before the
  takeover, which then sees it, or the takeover comes first and the decision is refused. A lease that
  expired while nobody took it over still has this holder's epoch: nothing was decided by another, so
  its decisions stand and its next renewal keeps the epoch.

What a decision does outside the database follows its commit (a launch follows the RUNNING transition);
a supervisor that loses the lease between the two is a control plane that stopped there, which the next
one already heals (``executor.adopt`` finds the attempt or makes sure it never starts).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db import read_session, write_session
from control_plane.db.clock import database_now_us
from control_plane.jobs.tables import LEASE_HOLDER_LENGTH, JobSupervisorLeaseRow

_log = logging.getLogger("aether.jobs")

#: The lease's one row.
_LEASE_ID = 1


class LeaseLost(Exception):
    """This supervisor no longer holds the lease its decision was made under: another took it over."""


def new_holder() -> str:
    """A name no other supervisor has: host, pid, and a random part (a pid is reused across restarts)."""
    suffix = f":{os.getpid()}:{uuid.uuid4().hex[:12]}"
    return socket.gethostname()[: LEASE_HOLDER_LENGTH - len(suffix)] + suffix


class SupervisorLease:
    """One supervisor's side of the lease (module doc). Used from the supervisor's thread."""

    def __init__(
        self, sessions: sessionmaker[Session], lease_s: float, renew_s: float, holder: str | None = None
    ) -> None:
        if not 0 < renew_s < lease_s:
            raise ValueError(f"the lease's renewal ({renew_s:g} s) must come within it ({lease_s:g} s)")
        self._sessions = sessions
        self._lease_us = int(lease_s * 1e6)
        self._renew_s = renew_s
        self.holder = holder or new_holder()
        #: The epoch this supervisor holds the lease under; None while it does not hold it.
        self.epoch: int | None = None
        self._renew_at = 0.0  # time.monotonic() of the next renewal
        self._waiting_for = ""  # the other holder last found, to log each once

    def hold(self) -> bool:
        """Whether this supervisor holds the lease, renewing or taking it when due (module doc). A renewal
        that fails (the database out of reach) raises, and is tried again at the next call: the decisions
        meanwhile are fenced, and cannot commit without the database either."""
        if self.epoch is not None and time.monotonic() < self._renew_at:
            return True
        began = time.monotonic()
        with read_session(self._sessions) as session:
            row = session.get(JobSupervisorLeaseRow, _LEASE_ID)
            now = database_now_us(session)
            if row is not None and row.holder != self.holder and row.expires_at_us > now:
                return self._not_held(row.holder, row.epoch)
        with write_session(self._sessions) as session:
            row = session.get(JobSupervisorLeaseRow, _LEASE_ID, with_for_update=True, populate_existing=True)
            now = database_now_us(session)
            if row is None:  # a database made from the models rather than the migrations
                row = JobSupervisorLeaseRow(id=_LEASE_ID, holder="", epoch=0, expires_at_us=0)
                session.add(row)
            if not (row.holder == self.holder and row.epoch == self.epoch):
                if row.expires_at_us > now:  # taken by another since the read (or ours, lost, not expired)
                    return self._not_held(row.holder, row.epoch)
                previous, row.holder, row.epoch = row.holder, self.holder, row.epoch + 1
                _log.info(
                    "this job supervisor (%s) leads, epoch %d%s",
                    self.holder, row.epoch, f", after {previous}'s lease expired" if previous else "",
                )  # fmt: skip
            row.expires_at_us = now + self._lease_us
            epoch = row.epoch
        self.epoch = epoch
        # From before the transaction: the database's expiry was set after this, so the renewal is due
        # no later than renew_s before the lease ends as the database counts it.
        self._renew_at = began + self._renew_s
        return True

    def _not_held(self, holder: str, epoch: int) -> bool:
        if self.epoch is not None:
            _log.warning("the jobs lease went to %s (epoch %d): this supervisor stops acting", holder, epoch)
        elif holder != self._waiting_for:  # once per holder, not once a tick
            _log.info("the jobs lease is %s's (epoch %d): this supervisor waits for it", holder, epoch)
        self.epoch, self._waiting_for = None, holder
        return False

    def fence(self, session: Session) -> None:
        """Raises :class:`LeaseLost` unless the lease still names this holder and its epoch, read in the
        caller's write transaction (the decision's), first thing in it (module doc)."""
        found = session.execute(
            select(JobSupervisorLeaseRow.holder, JobSupervisorLeaseRow.epoch)
            .where(JobSupervisorLeaseRow.id == _LEASE_ID)
            .with_for_update(read=True)
        ).one_or_none()
        if self.epoch is None or found is None or tuple(found) != (self.holder, self.epoch):
            held, self.epoch = self.epoch, None
            now = "nobody" if found is None else f"{found.holder}, epoch {found.epoch}"
            raise LeaseLost(
                f"the jobs lease of this supervisor ({self.holder}, epoch {held}) is now {now}'s: its"
                " decision is not committed"
            )

    def release(self) -> None:
        """Gives the lease up (expired now), if this supervisor still holds it, so that another supervisor
        takes it over without waiting for it to expire."""
        if self.epoch is None:
            return
        with write_session(self._sessions) as session:
            row = session.get(JobSupervisorLeaseRow, _LEASE_ID, with_for_update=True, populate_existing=True)
            if row is not None and (row.holder, row.epoch) == (self.holder, self.epoch):
                row.expires_at_us = 0
        self.epoch = None
