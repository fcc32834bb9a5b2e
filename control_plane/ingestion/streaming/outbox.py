"""The outbox: carries committed batches' offline rows and quarantine records to the offline store and
SQL (see ``commit.py`` for how a receipt gets there).

``drain`` applies every receipt waiting in the outbox together: one offline write of all their history
rows, then one SQL transaction (quarantine rows, run counters, the receipt ids), then removes the
receipts. Several read batches per drain keep the per-write costs (a Parquet file and its fsync, a SQL
commit) off each batch. A receipt whose id SQL already holds is only removed, so a crash between the SQL
commit and the removal double-counts nothing; the SQL transaction re-checks the ids, so two drainers (a
fenced-out predecessor still running; the orphan sweep draining one run's receipts while the live
materializer drains the whole outbox) count a receipt once. They store its rows once too: the offline
files hold the rows of the receipts found unapplied before the write, and the transaction commits only if
it finds exactly those still unapplied. If another drainer applied some of them meanwhile, the drain
counts nothing, removes its files and drops their intent (as a drain that counted nothing, below), and
tries again with the receipts left, writing their rows anew; the set only shrinks, so the tries end.

The offline write has a write-ahead intent (``ingestion/intents.py``, as a batch run's chunk): the store
names the drain's files before writing any, the drain commits them as an intent (``intents.announce``)
and its recording transaction deletes it first, conditionally (``intents.settle_in``), with the rows it
counts. A drainer killed between the write and the commit leaves the intent and the receipts (they leave
the outbox only after the commit): the next drain writes and counts the rows again, and the control
plane's intent recovery removes the killed drain's files once the intent is older than the lease
(``claim_lease_s``, 5 minutes; until then readers see those rows twice). A drain that counted nothing
(another drainer applied its receipts, or its transaction failed before COMMIT) removes its files at
once and drops the intent; one that failed at COMMIT leaves both to the recovery, which keeps the files
if the commit landed (the intent is then gone). The drain renews its intent from its announce until its
transaction ends (``intent_lease``, every third of the default ``claim_lease_s``); one that stalled past
the lease all the same finds its intent taken and is refused (``IntentLost``) with nothing counted (the
recovery removes its files, and the drain those written after it): its receipts stay in the outbox,
the drain tries again (``INTENT_TRIES`` in all) and then raises, and the next drain (or the
materializer's successor, which drains the outbox first) applies them.

The receipt ids' rows (``ingestion_receipts``) are only needed while a drainer may still apply their
receipts, and one row per committed batch grew the table without end; so the recording transaction
also deletes its run's rows whose receipts are gone from Redis (``_prune``). Once a receipt is gone it
never comes back (ids are random and only a drain removes receipts, after the SQL commit that recorded
them): no later listing of the outbox holds it. What a row still guards against is a drainer that read
the receipt before it was removed (a fenced-out predecessor, paused between its listing and its
recording transaction); the recording transaction therefore inserts its rows first and only then checks
that their receipts are still in Redis, applying only those. Either the row of a receipt applied before
is still there (the insert conflicts with it, or the re-check finds it), or it was pruned, which needed
the receipt gone from Redis before the insert, so the check after it finds it gone. A crash between
the SQL commit and the removal leaves the receipts in Redis and so their rows in SQL, until a drain has
removed both. What is left for good is the last drain's rows of each run.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import pyarrow as pa
import redis
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db import write_session
from control_plane.ingestion import intents
from control_plane.ingestion.intent_lease import IntentLease
from control_plane.ingestion.intents import IntentLost
from control_plane.ingestion.quarantine import RunSource, now_us, record_outcome
from control_plane.ingestion.streaming.commit import ipc_table
from control_plane.ingestion.streaming.state_keys import StateKeys
from control_plane.ingestion.tables import IngestionReceiptRow
from control_plane.offline.store import OfflineStore

#: The most receipt rows one drain prunes (see ``_prune``).
PRUNE_BATCH = 1000
#: How many times one drain tries when a recovery took its intent (it stalled past the lease).
INTENT_TRIES = 3

_log = logging.getLogger("aether.ingestion.stream")


@dataclass(frozen=True)
class Receipt:
    """What one committed batch leaves for the offline store and SQL."""

    history: pa.Table
    rejected: pa.Table  # record_key, payload, reason
    accepted: int


def drain(
    client: redis.Redis,
    keys: StateKeys,
    sessions: sessionmaker[Session],
    offline: OfflineStore,
    source: RunSource,
    known: Mapping[str, Receipt] | None = None,
) -> int:
    """Applies every receipt waiting in the outbox; returns how many were applied. ``known``: receipts
    (by id) whose content the caller still holds, as committed, so they need not be read back."""
    return apply(client, keys, sessions, offline, source, listed(client, keys), known)


def listed(client: redis.Redis, keys: StateKeys) -> list[str]:
    """The receipt keys waiting in the outbox of ``keys``."""
    found = cast(list[Any], client.lrange(keys.outbox, 0, -1))
    return [raw.decode() if isinstance(raw, bytes) else str(raw) for raw in found]


def apply(
    client: redis.Redis,
    keys: StateKeys,
    sessions: sessionmaker[Session],
    offline: OfflineStore,
    source: RunSource,
    receipt_keys: list[str],
    known: Mapping[str, Receipt] | None = None,
) -> int:
    """``drain`` of the receipts ``receipt_keys`` of the outbox of ``keys``, all of the run ``source``. A
    drain whose intent a recovery took (it stalled past the lease between its write and its commit) counts
    nothing and is tried again, up to ``INTENT_TRIES`` times in all; then :class:`IntentLost` goes on, the
    receipts still in the outbox for a later drain."""
    for attempt in range(1, INTENT_TRIES + 1):
        try:
            return _apply_once(client, keys, sessions, offline, source, receipt_keys, known)
        except IntentLost:
            if attempt == INTENT_TRIES:
                raise
            _log.warning(
                "run %s: the intent of an outbox drain's offline files lapsed before its commit (the drain"
                " stalled past the lease); nothing was counted, its receipts stay and are drained again",
                source.run_id,
            )
    raise AssertionError("unreachable")


def _apply_once(
    client: redis.Redis,
    keys: StateKeys,
    sessions: sessionmaker[Session],
    offline: OfflineStore,
    source: RunSource,
    receipt_keys: list[str],
    known: Mapping[str, Receipt] | None,
) -> int:
    if not receipt_keys:
        return 0
    ids = [key.rsplit(":", 1)[-1] for key in receipt_keys]
    receipts: dict[str, Receipt] = {}
    for key, receipt_id in zip(receipt_keys, ids, strict=True):
        if known is not None and receipt_id in known:
            receipts[receipt_id] = known[receipt_id]
            continue
        fields = cast(dict[Any, Any], client.hgetall(key))
        if fields:  # else an empty entry: nothing to apply, only to remove
            receipts[receipt_id] = _read(fields)
    with write_session(sessions) as session:
        pending = _not_applied(session, receipts)
    # A receipt SQL already holds is only removed. A try that finds fewer receipts pending than it wrote
    # files for counts nothing and tries again with those: the pending set only shrinks (module
    # docstring), so this ends within len(receipts) tries.
    for _ in range(len(receipts) + 1):
        if not pending:
            break
        committed, pending = _record(client, keys, sessions, offline, source, receipts, pending)
        if committed:
            break
        if not pending:  # another drainer applied them all meanwhile (and removes them)
            return 0
    else:
        _log.warning(
            "run %s: other drainers kept applying this drain's receipts; it counted nothing, the rest"
            " stay in the outbox for the next drain",
            source.run_id,
        )
        return 0
    pipeline = client.pipeline(transaction=True)
    for key in receipt_keys:
        pipeline.lrem(keys.outbox, 1, key)
    pipeline.delete(*receipt_keys)
    pipeline.execute()
    return len(pending)


def _record(
    client: redis.Redis,
    keys: StateKeys,
    sessions: sessionmaker[Session],
    offline: OfflineStore,
    source: RunSource,
    receipts: Mapping[str, Receipt],
    pending: list[str],
) -> tuple[bool, list[str]]:
    """One try of a drain: writes the history rows of ``pending`` and counts them in one transaction.
    Returns whether it committed and the receipts found pending inside the transaction; it commits only
    when those are exactly ``pending``, the receipts its files hold (else it counts nothing, removes its
    files and drops their intent)."""
    written_for = set(pending)
    written = _Written(sessions, source)
    histories = [receipts[i].history for i in pending if receipts[i].history.num_rows]
    if histories:  # its intent committed before any file is written, renewed until the commit ends
        written.write(offline, pa.concat_tables(histories, promote_options="default"))
    at_commit = False
    try:
        with write_session(sessions) as session:
            if written.intent is not None:  # first: a lapsed intent refuses the drain (IntentLost)
                intents.settle_in(session, written.intent)
            _prune(session, client, keys, source.run_id)
            pending = _not_applied(session, receipts)  # again, inside the transaction that records them
            if pending:
                # The rows first, then the check that the receipts are still in Redis: a receipt
                # whose row was pruned since the check above is gone from Redis (module docstring).
                stamp = now_us()
                session.add_all(
                    IngestionReceiptRow(receipt_id=i, run_id=source.run_id, applied_at_us=stamp)
                    for i in pending
                )
                session.flush()
                pending = _still_waiting(client, keys, pending)
            if pending and set(pending) == written_for:
                rejected = pa.concat_tables([receipts[i].rejected for i in pending])
                record_outcome(
                    session,
                    source,
                    accepted=sum(receipts[i].accepted for i in pending),
                    rejected=rejected.drop_columns(["record_key"]),
                    record_keys=rejected.column("record_key").to_pylist(),
                )
                session.flush()
                at_commit = True
            else:
                # Another drainer applied some or all of them meanwhile: this drain's files hold those
                # rows too, so they are duplicates; the caller tries again with the rest, if any.
                session.rollback()
    except IntentLost:
        # The recovery that took the intent removed the files it found; a write slow past the lease
        # may have put them there after it, and no intent is left to find them: remove them here
        # (removing what the recovery removed already is harmless).
        written.discard(offline)
        raise
    except BaseException:
        if not at_commit:  # nothing committed: the files go now (else the recovery settles them)
            written.discard(offline)
        raise
    finally:  # out of the transaction: on SQLite a renewal may wait for its write lock meanwhile
        written.stop_renewing()
    if not at_commit:
        written.discard(offline)
    return at_commit, pending


@dataclass
class _Written:
    """One drain's offline files and their intent (``intents.announce``, committed before the write)."""

    sessions: sessionmaker[Session]
    source: RunSource
    paths: list[str] = field(default_factory=list)
    intent: intents.Intent | None = None
    lease: IntentLease | None = None

    def write(self, offline: OfflineStore, table: pa.Table) -> None:
        """Writes the drain's rows, its intent announced first and renewed until :meth:`stop_renewing`."""
        source = self.source
        self.lease = IntentLease(self.sessions, source.run_id, source.view, source.version, 0)
        try:
            self.paths = self.lease.write(offline, table)
        finally:  # a write that failed after its announce leaves its intent to the recovery
            self.intent = self.lease.intent

    def stop_renewing(self) -> None:
        if self.lease is not None:
            self.lease.stop()

    def discard(self, offline: OfflineStore) -> None:
        """Removes the files of a drain that counted nothing, then drops their intent; what cannot be
        removed stays, with its intent, for the recovery."""
        if self.intent is None:
            return
        try:
            for path in self.intent.paths:
                with contextlib.suppress(FileNotFoundError):
                    offline.filesystem.delete_file(path)
        except OSError:
            _log.exception(
                "run %s: could not remove uncounted offline files %s", self.source.run_id, self.paths
            )
            return
        intents.drop(self.sessions, self.intent)


def _not_applied(session: Session, receipts: Mapping[str, Receipt]) -> list[str]:
    if not receipts:
        return []
    query = select(IngestionReceiptRow.receipt_id).where(IngestionReceiptRow.receipt_id.in_(list(receipts)))
    done = set(session.scalars(query))
    return [i for i in receipts if i not in done]


def _still_waiting(client: redis.Redis, keys: StateKeys, receipt_ids: list[str]) -> list[str]:
    """The receipts of ``receipt_ids`` still in Redis (the others were applied and removed by another
    drainer: a row left for such a receipt is pruned like any other)."""
    pipeline = client.pipeline(transaction=False)
    for receipt_id in receipt_ids:
        pipeline.exists(keys.receipt(receipt_id))
    found = pipeline.execute()
    return [i for i, exists in zip(receipt_ids, found, strict=True) if exists]


def _prune(session: Session, client: redis.Redis, keys: StateKeys, run_id: str) -> None:
    """Deletes the run's receipt rows whose receipts are gone from Redis (see the module docstring), at
    most ``PRUNE_BATCH`` a drain: a table grown by earlier versions shrinks over many drains, each with
    a short transaction. The run's receipts all live under ``keys``: its id names the view version and
    group that ``keys`` does."""
    query = select(IngestionReceiptRow.receipt_id).where(IngestionReceiptRow.run_id == run_id)
    listed = list(session.scalars(query.limit(PRUNE_BATCH)))
    if not listed:
        return
    kept = set(_still_waiting(client, keys, listed))
    gone = [i for i in listed if i not in kept]
    if gone:
        session.execute(delete(IngestionReceiptRow).where(IngestionReceiptRow.receipt_id.in_(gone)))


def _read(fields: Mapping[Any, Any]) -> Receipt:
    return Receipt(ipc_table(fields[b"history"]), ipc_table(fields[b"rejected"]), int(fields[b"accepted"]))
