"""Removes the online values (Redis keys) of deleted feature views, in the background.

Deleting a view (``FeatureRegistry.delete_feature_view``) records one row per version in
``feature_view_online_cleanups`` in the delete's transaction, and returns: finding a version's keys means
scanning the keyspace, which a delete RPC must not wait for. This loop takes the pending rows and, for
each version:

1. sets the version's *fence* key (:func:`deleted_view_fence`): a stream materializer still writing the
   version watches it in every commit and stops instead of writing (``streaming/commit.py``), so no key
   appears after the scan below has passed it;
2. walks the keyspace with ``SCAN MATCH ae:{<entity>:*}:<view>:v<version>`` (never ``KEYS``, which blocks
   Redis for the whole keyspace) and ``UNLINK``s what it finds a batch at a time (freed off Redis's main
   thread). Each key found is checked against the exact layout before it goes: a view named as a prefix
   of another (``user`` / ``user_stats``) or another version of the same name (a view created again after
   the delete starts above the deleted versions) is never touched;
3. removes the version's stream materializer state, every consumer group's (owner key, applied and
   rejected id sets, trim point: ``ingestion/streaming/commit.py``'s ``StateKeys``), which nothing else
   would remove when no materializer runs at the delete. A materializer still running drains its outbox
   when it sees the fence, before it stops (``ViewDeleted``), and removes its own group's state keys
   again after that, in case it started during this pass and set its owner key behind it. Removing the
   id sets under a running one changes nothing it still does: the fence refuses all its commits;
4. drains every outbox of the version (``outboxes``: ``ingestion/streaming/orphans.py``): receipts a
   materializer killed before the delete left, which no materializer can start to drain any more, go to
   the offline store and their run's counters and leave Redis (before, they stayed for good). The
   drain counts a receipt once even beside a running materializer draining the same outbox;
5. marks the row done, with the number of online keys removed, and appends an audit entry
   (``online_cleanup``, actor ``online-cleanup``).

Idempotent and resumable: a version whose cleanup fails (Redis down, the offline store refusing an
outbox's rows, the control plane stopped mid-scan) keeps its row pending and the next pass scans again
from the start, finding only what is left. Each version is cleaned up on its own: one that fails is
logged (the first failure of a run of them, then one in ``LOG_EVERY``) and the pass goes on with the
others. Before, the pass stopped at the first failure, so one version whose outbox could not be drained
(an offline store without write permission, a full disk) kept every version deleted after it, online
keys included, in Redis for good. A failure that says Redis itself cannot be reached
(:func:`redis_unreachable`: refused, timed out, still loading after a restart) is another matter: every
version after it would fail the same way, each after its own wait for Redis's timeout, so a pass over N
pending versions with Redis down took N timeouts, and held the loop (and the control plane's shutdown,
which waits for the pass in progress) that long. The pass stops there instead; the versions after it stay
pending, untried, for the next pass. So does a failure that says the metadata database is unreachable
(:func:`database_down`: down, restarting, locked past its busy timeout, no pooled connection free): each
version after it did all its Redis work, a full-keyspace ``SCAN`` among it, and its outbox drain, only for
its ``mark_done`` to fail the same way, so the pass ends there too. A conflict between transactions
(a serialization failure, a deadlock) is about that one version's row, and the pass goes on.
Offline-store data of deleted versions is kept: training sets and model lineage refer to it.

The fence keys stay (one small key per deleted version): a fence that expired would let a materializer
that was cut off from Redis longer than that write a deleted version again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio
import redis.exceptions
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clients.database_errors import database_unavailable
from control_plane.audit.log import record
from control_plane.background import TRANSIENT_FAILURES, BackgroundLoop
from control_plane.db.engine import read_session, write_session
from control_plane.db.models import FeatureViewOnlineCleanupRow
from control_plane.features.store import now_us

_log = logging.getLogger("aether.features.online_cleanup")

ACTOR = "online-cleanup"
#: Keys per SCAN step and per UNLINK: each is one short command, so Redis keeps serving in between.
BATCH = 1000
#: A version failing pass after pass is logged at its first failure and then once in this many.
LOG_EVERY = 100


def deleted_view_fence(view: str, version: int) -> str:
    """The key whose existence says that ``view`` version ``version`` was deleted."""
    return f"aether:deleted-view:{view}:v{version}"


def materializer_prefix(view: str, version: int) -> str:
    """The start of every Redis key of the version's stream materializers (``StateKeys``; a consumer
    group's name and the key's role follow)."""
    return f"aether:materializer:{view}:v{version}:"


#: The ends of a materializer's state keys (``StateKeys``) that the cleanup removes. Never the end of an
#: outbox (``:outbox``) or a receipt (``:receipt:<hex id>``), whatever the group's name.
MATERIALIZER_STATE = (
    b":owner", b":applied", b":rejected", b":trimmed_below", b":trim_reach", b":ingested_high",
    b":refused_ahead", b":refused_ahead_through",
)  # fmt: skip


def online_key_pattern(entity: str, view: str, version: int) -> str:
    """SCAN pattern of the version's online keys (``kernels.online_keys``). Entity and view names match
    ``[a-z_][a-z0-9_]*``, so they hold no glob character."""
    return f"ae:{{{entity}:*}}:{view}:v{version}"


def is_online_key_of(key: bytes, entity: str, view: str, version: int) -> bool:
    """Whether ``key`` is exactly an online key of the version: the join values between the entity and
    the view are percent-encoded and never hold ``}``, so the tag closes right before the view name."""
    head, tail = f"ae:{{{entity}:".encode(), f"}}:{view}:v{version}".encode()
    return (
        len(key) >= len(head) + len(tail)
        and key.startswith(head)
        and key.endswith(tail)
        and b"}" not in key[len(head) : len(key) - len(tail)]
    )


def redis_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says that Redis itself cannot serve the cleanup, whichever version it was cleaning
    up: refused, reset or timed out (redis-py's ``ConnectionError`` and ``TimeoutError``, from the async
    client or from the outbox drain's blocking one), loading its dataset after a restart
    (``BusyLoadingError``) or refusing the credentials (``AuthenticationError``; both kinds of
    ``ConnectionError``). A failure of one version's work (its outbox's rows refused by the offline store,
    an OS-level ``ConnectionError`` from S3, a Redis error answer about one command) is not."""
    return isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError))


#: SQLSTATEs of a conflict between transactions (serialization failure, deadlock detected): transient, but
#: about the transaction that lost it, not the database.
_CONFLICTS = frozenset({"40001", "40P01"})


def database_down(exc: BaseException) -> bool:
    """Whether ``exc`` says that the metadata database cannot serve the cleanup, whichever version it was
    cleaning up: a transient failure (:func:`clients.database_errors.database_unavailable`) other than a
    conflict between transactions."""
    if database_unavailable(exc) is None:
        return False
    orig = getattr(exc, "orig", None)
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return state not in _CONFLICTS


@dataclass(frozen=True)
class PendingCleanup:
    view: str
    version: int
    entity: str


def pending(sessions: sessionmaker[Session]) -> list[PendingCleanup]:
    with read_session(sessions) as session:
        rows = session.scalars(
            select(FeatureViewOnlineCleanupRow)
            .where(FeatureViewOnlineCleanupRow.done_at_us.is_(None))
            .order_by(FeatureViewOnlineCleanupRow.deleted_at_us, FeatureViewOnlineCleanupRow.name)
        ).all()
        return [PendingCleanup(row.name, row.version, row.entity) for row in rows]


def mark_done(sessions: sessionmaker[Session], cleanup: PendingCleanup, removed: int) -> None:
    with write_session(sessions) as session:
        row = session.get(FeatureViewOnlineCleanupRow, (cleanup.view, cleanup.version))
        if row is None or row.done_at_us is not None:
            return  # done by another control plane sharing the database
        row.done_at_us = now_us()
        row.keys_removed = removed
        record(
            session,
            actor=ACTOR,
            action="online_cleanup",
            object_type="feature_view",
            object_id=cleanup.view,
            before=None,
            after={"version": cleanup.version, "entity": cleanup.entity, "online_keys_removed": removed},
        )


async def remove_online_keys(client: redis.asyncio.Redis, cleanup: PendingCleanup, batch: int = BATCH) -> int:
    """Fences the version and unlinks its online keys (see the module doc); returns how many."""
    await client.set(deleted_view_fence(cleanup.view, cleanup.version), b"1")
    pattern = online_key_pattern(cleanup.entity, cleanup.view, cleanup.version)
    removed, cursor = 0, 0
    while True:
        cursor, keys = await client.scan(cursor, match=pattern, count=batch)
        mine = [key for key in keys if is_online_key_of(key, cleanup.entity, cleanup.view, cleanup.version)]
        if mine:
            removed += await client.unlink(*mine)
        if cursor == 0:
            return removed


async def remove_materializer_state(
    client: redis.asyncio.Redis, cleanup: PendingCleanup, batch: int = BATCH
) -> int:
    """Unlinks the version's materializer state keys, not its outboxes nor receipts (see the module doc);
    returns how many. Call it after the fence is set."""
    # View names match ``[a-z_][a-z0-9_]*``: no glob character; the ``:`` after the version keeps v1
    # from matching v11.
    pattern = materializer_prefix(cleanup.view, cleanup.version) + "*"
    removed, cursor = 0, 0
    while True:
        cursor, keys = await client.scan(cursor, match=pattern, count=batch)
        state = [key for key in keys if key.endswith(MATERIALIZER_STATE)]
        if state:
            removed += await client.unlink(*state)
        if cursor == 0:
            return removed


class OnlineCleanup:
    """The loop: every ``interval_s`` it cleans up the pending deleted versions (if any; with none it
    reads one query's worth of SQL and never touches Redis)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        client: redis.asyncio.Redis,
        interval_s: float = 10.0,
        batch: int = BATCH,
        outboxes: Callable[[str, int], int] | None = None,
    ) -> None:
        """``outboxes(view, version)``: drains the deleted version's outboxes (step 4 of the module doc;
        ``orphans.drain_outboxes`` with the control plane's stores), blocking; None leaves them."""
        self._sessions = sessions
        self._outboxes = outboxes
        self._client = client
        self._interval_s = interval_s
        self._batch = batch
        self._background = BackgroundLoop("online-cleanup")
        self.failures: dict[tuple[str, int], int] = {}  # failed passes in a row, by (view, version)

    async def run_once(self) -> list[tuple[PendingCleanup, int]]:
        """Cleans up every pending version; returns each one done with the keys removed. A version that
        fails is logged and stays pending for the next pass; the others go on, unless the failure says
        that Redis or the metadata database cannot be reached: the pass ends there and leaves the rest
        pending, untried (see the module doc). Raises only when the pending versions cannot be read."""
        done = []
        todo = await asyncio.to_thread(pending, self._sessions)
        for index, cleanup in enumerate(todo):
            try:
                removed = await self._clean_up(cleanup)
            except Exception as exc:  # logged; the version is tried again at the next pass
                self._failed(cleanup, exc)
                outage = "Redis" if redis_unreachable(exc) else "the database" if database_down(exc) else ""
                if outage:  # the others would each fail the same way, after all their work
                    _log.debug("online cleanup pass ended with %s unreachable; %d versions left pending",
                               outage, len(todo) - index - 1)  # fmt: skip
                    break
                continue
            self.failures.pop((cleanup.view, cleanup.version), None)
            done.append((cleanup, removed))
        return done

    async def _clean_up(self, cleanup: PendingCleanup) -> int:
        removed = await remove_online_keys(self._client, cleanup, self._batch)
        state = await remove_materializer_state(self._client, cleanup, self._batch)
        if self._outboxes is not None:
            await asyncio.to_thread(self._outboxes, cleanup.view, cleanup.version)
        await asyncio.to_thread(mark_done, self._sessions, cleanup, removed)
        _log.info(
            "removed %d online keys and %d stream materializer state keys of deleted feature view"
            " %r version %d",
            removed, state, cleanup.view, cleanup.version,
        )  # fmt: skip
        return removed

    def _failed(self, cleanup: PendingCleanup, exc: Exception) -> None:
        key = (cleanup.view, cleanup.version)
        failures = self.failures[key] = self.failures.get(key, 0) + 1
        if failures != 1 and failures % LOG_EVERY != 0:
            return
        message = "online cleanup of deleted feature view %r version %d failed (%d passes in a row), retrying"
        if isinstance(exc, TRANSIENT_FAILURES):  # Redis or the database down: no traceback
            _log.warning(message + ": %s", cleanup.view, cleanup.version, failures, exc)
        else:
            _log.error(message, cleanup.view, cleanup.version, failures, exc_info=exc)

    async def _run(self) -> None:
        failures = 0
        try:
            while self._background.running:
                try:
                    await self.run_once()
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except TRANSIENT_FAILURES as exc:  # Redis or the database down: the next pass retries
                    failures += 1
                    if failures == 1 or failures % 100 == 0:
                        _log.warning(
                            "online cleanup of deleted feature views failed (%d in a row), retrying: %s",
                            failures, exc,
                        )  # fmt: skip
                except Exception:
                    _log.exception("online cleanup of deleted feature views failed, retrying")
                await self._background.pause(self._interval_s)
        finally:
            with contextlib.suppress(Exception):
                await self._client.aclose()

    def start(self) -> None:
        self._background.start(self._run())

    async def stop(self) -> None:
        """Ends the loop and waits for it (it closes its Redis client on the way out)."""
        await self._background.stop()


def cleanup_states(session: Session, view: str) -> list[tuple[int, bool]]:
    """(version, done) of each deleted version of ``view`` whose online cleanup is recorded."""
    rows = session.execute(
        select(FeatureViewOnlineCleanupRow.version, FeatureViewOnlineCleanupRow.done_at_us)
        .where(FeatureViewOnlineCleanupRow.name == view)
        .order_by(FeatureViewOnlineCleanupRow.version)
    ).all()
    return [(version, done is not None) for version, done in rows]
