"""Write-ahead intents for a chunk's offline files, and the recovery pass that removes the files of the
chunks that were never counted.

A batch run (and a quarantine replay's batch group) writes a chunk's accepted rows to the offline store
and then counts them in one SQL transaction (``batch``, ``chunk_commit``). A run killed in between
(SIGKILL, power loss), or one whose COMMIT failed and whose outcome could not be read back within
``chunk_commit.RESOLVE_WITHIN_S``, left Parquet files that no run counts, read by every training set and
point-in-time join: records in no longer added up to accepted + quarantined in the store.

Now, before the write, the run commits an intent (:func:`announce`, its own short transaction): one
``ingestion_intents`` row naming the run, the chunk, the exact paths the write will create (the store
names them before writing, ``OfflineStore.write``'s ``announce``) and the time, which is the owner's
lease stamp, read from the database's clock (:func:`database_now_us`), as the recovery's cutoff is:
two hosts' clocks are never compared. Then:

* the chunk's transaction deletes the intent (:func:`settle_in`), in the transaction that counts its
  rows: committed, the rows are counted and the intent is gone, so its files are kept; rolled back, the
  intent is still there. The delete is conditional on the intent still being ``writing``: one a recovery
  pass took (below) refuses the chunk (:class:`IntentLost`) before its transaction commits anything.
* a chunk that did not commit (``chunk_commit`` knows: a failure before COMMIT, or a COMMIT read back as
  not landed) has its files removed at once and its intent dropped (:func:`drop`).
* what is left (a run killed between the write and the commit, a COMMIT whose outcome stayed unknown,
  a failed write whose cleanup failed) is settled by :func:`recover` once the intent is older than the
  lease: it marks each lapsed intent ``reclaiming`` (a conditional update, committed first, so the owner's
  late commit is refused rather than counting files about to go), removes its files, then deletes it. A
  pass killed part-way leaves ``reclaiming`` intents, which the next pass finishes (removing a file twice
  is harmless; none is ever reused). An intent whose chunk committed is gone, so a committed chunk's
  files are never removed, whatever its run learnt of its COMMIT.

The lease is the control plane's ``claim_lease_s`` (5 minutes, as a replay's claim and a run's online
part). An intent spans its chunk's offline write and counting transaction, and its writer renews it
meanwhile (:func:`renew`, every third of the lease, ``intent_lease``), so a live writer keeps it however
long those take; the recovery takes only an intent whose stamp lapsed (its writer dead, or stalled past
the lease). A writer that lost it all the same is refused: its renewal finds the intent taken and the
writer removes its files and fails before its transaction, or its transaction's delete finds it taken
(FAILED_PRECONDITION); nothing of the chunk stays stored or counted. On PostgreSQL the conditional
update and the chunk's delete (or a renewal) lock the same row, so one waits for the other and then
finds the intent changed; SQLite's write lock serializes them.

A stream materializer's outbox drain (``streaming/outbox.py``) announces its files the same way (chunk 0
of its stream run) and deletes the intent in the transaction that records its receipts; a drain refused
with :class:`IntentLost` keeps its receipts in the outbox, to be drained again.

The recovery runs when the ingestion service starts and then every ``INTENT_RECOVERY_INTERVAL_S`` in the
background (``intent_recovery``). The control plane's offline readers never read a file an open intent
names (:func:`reader_filter`, ``OfflineStore``'s ``uncounted``): the store lists its folders first and
then reads the intents, and the recovery removes an intent's files before it deletes the intent, so a
listed file is either named by an intent still open at that read or counted (or already gone). A reader
that cannot read the intents is refused (UNAVAILABLE). A compaction pass given :func:`open_paths`
(``compact_view``'s ``pending``: the control plane's loop and RPC) merges none of the files an intent
names, and merges nothing while the intents cannot be read. A run stalled past the lease in the middle
of its write and then killed may write a file after the recovery removed its intent's files: that file
stays uncounted, and is read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, and_, delete, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from clients.database_errors import database_unavailable
from clients.errors import FailedPrecondition, Unavailable
from control_plane.db import read_session, write_session
from control_plane.db.clock import database_now_us
from control_plane.ingestion.quarantine import rowcount
from control_plane.ingestion.tables import IngestionIntentRow

WRITING = "writing"
RECLAIMING = "reclaiming"
#: An intent the recovery will not act on (a path that is not its store's data file): kept for an operator.
INVALID = "invalid"
#: How many intents one recovery pass takes at most (the next pass takes the rest).
RECOVERY_BATCH = 1_000

_log = logging.getLogger("aether.ingestion.intents")


class IntentLost(FailedPrecondition):
    """A chunk's intent was taken by a recovery pass (its write and commit outlasted the lease) before the
    chunk's transaction counted it; raised in that transaction, which then counts nothing."""


@dataclass(frozen=True)
class Intent:
    """An announced intent: its row ``id`` and ``token`` (a random identity never reused: SQLite gives a
    deleted newest row's id to the next row, so a statement matching the id alone could take another
    run's intent) together name it."""

    id: int
    run_id: str
    paths: tuple[str, ...]
    token: str = ""


def _this(intent: Intent) -> ColumnElement[bool]:
    """The row of ``intent``: its id and its token."""
    return and_(IngestionIntentRow.id == intent.id, IngestionIntentRow.token == intent.token)


def announce(
    sessions: sessionmaker[Session], run_id: str, view: str, version: int, chunk: int, paths: Sequence[str]
) -> Intent:
    """Commits the intent to write ``paths`` for chunk ``chunk`` of run ``run_id``, before any is written."""
    token = uuid.uuid4().hex
    with write_session(sessions) as session:
        stamp = database_now_us(session)
        row = IngestionIntentRow(
            token=token, run_id=run_id, chunk=chunk, view=view, version=version,
            paths=json.dumps(list(paths)), state=WRITING, created_at_us=stamp, updated_at_us=stamp,
        )  # fmt: skip
        session.add(row)
        session.flush()
        return Intent(row.id, run_id, tuple(paths), token)


def open_paths(sessions: sessionmaker[Session]) -> frozenset[str]:
    """Every path an intent still names (its chunk not counted, or not yet recovered): compaction merges
    none of them (``offline.compaction.compact_view``'s ``pending``), since the recovery may remove it.
    An intent whose paths cannot be read names none."""
    with read_session(sessions) as session:
        stored = list(session.scalars(select(IngestionIntentRow.paths)))
    named: set[str] = set()
    for paths in stored:
        with contextlib.suppress(ValueError):
            named.update(_paths(paths))
    return frozenset(named)


def reader_filter(sessions: sessionmaker[Session]) -> Callable[[], frozenset[str]]:
    """What the control plane's offline readers leave out (``OfflineStore``'s ``uncounted``): every path an
    open intent names, its rows not counted (yet, or ever). While the intents cannot be read (the database
    down) a reader is refused (:class:`Unavailable`) rather than let read files it cannot tell apart."""

    def uncounted() -> frozenset[str]:
        try:
            return open_paths(sessions)
        except (OperationalError, InterfaceError, SQLAlchemyTimeoutError) as exc:
            reason = database_unavailable(exc) or f"{type(exc).__name__}: metadata database unavailable"
            raise Unavailable(
                "cannot read which offline files are not counted yet (the open ingestion intents), so no"
                f" offline row was read: {reason}; retry once the metadata database answers"
            ) from exc

    return uncounted


def renew(sessions: sessionmaker[Session], intent: Intent) -> bool:
    """Moves ``intent``'s lease stamp to the database's now (its own short transaction, as
    :func:`announce`'s), while it is still ``writing``; False when it is not: a recovery pass took it, or
    its chunk settled or dropped it (``intent_lease``)."""
    with write_session(sessions) as session:
        query = (
            update(IngestionIntentRow)
            .where(_this(intent), IngestionIntentRow.state == WRITING)
            .values(updated_at_us=database_now_us(session))
            .execution_options(synchronize_session=False)
        )
        return rowcount(session.execute(query)) == 1


def settle_in(session: Session, intent: Intent) -> None:
    """Deletes ``intent`` in the caller's transaction (the one that counts its chunk); :class:`IntentLost`
    when a recovery pass took it, before anything of the chunk is counted."""
    query = delete(IngestionIntentRow).where(_this(intent), IngestionIntentRow.state == WRITING)
    if rowcount(session.execute(query.execution_options(synchronize_session=False))) != 1:
        raise IntentLost(
            f"run {intent.run_id}: the intent of its chunk's offline files {list(intent.paths)} lapsed (the"
            " write and its commit took longer than the lease) and the recovery took it; the chunk is not"
            " counted and its files are removed"
        )


def drop(sessions: sessionmaker[Session], intent: Intent) -> None:
    """Deletes the intent of a chunk whose files its run removed itself (it did not commit); when that
    fails it stays, and the recovery removes the (gone) files again and deletes it."""
    try:
        with write_session(sessions) as session:
            session.execute(delete(IngestionIntentRow).where(_this(intent)))
    except Exception:
        _log.exception("run %s: could not drop the intent of its removed offline files", intent.run_id)


@dataclass
class Recovery:
    """What one pass did: the intents whose files it removed (and deleted), by run, and those whose files
    could not all be removed (kept ``reclaiming`` for the next pass)."""

    removed: dict[str, list[str]] = field(default_factory=dict)  # run id -> its removed files
    intents: int = 0
    failed: int = 0
    invalid: int = 0  # marked ``invalid``: nothing of theirs removed


def recover(
    sessions: sessionmaker[Session],
    remove: Callable[[Sequence[str]], bool],
    lease_s: float,
    now: int | None = None,
    owns: Callable[[str, str, int], bool] | None = None,
) -> Recovery:
    """Removes the files of every intent older than ``lease_s`` (its owner dead, or past its lease) and of
    every intent a pass took before, then deletes them (module doc). ``remove`` removes files (a missing
    one counts as removed) and says whether all are gone. ``owns(path, view, version)`` says whether a
    path is a data file the store writes for the intent's view and version (``OfflineStore.is_data_file``):
    an intent naming any other path is marked ``invalid`` and logged, and nothing of it is removed.
    ``now``: the database's time (``database_now_us``) unless given (a test's)."""
    with write_session(sessions) as session:
        stamp = now if now is not None else database_now_us(session)
        cutoff = stamp - int(lease_s * 1_000_000)
        lapsed = select(IngestionIntentRow.id).where(
            IngestionIntentRow.state == WRITING, IngestionIntentRow.updated_at_us < cutoff
        )
        ids = list(session.scalars(lapsed.order_by(IngestionIntentRow.id).limit(RECOVERY_BATCH)))
        if ids:  # conditional: a chunk that committed meanwhile deleted its intent, and keeps its files
            session.execute(
                update(IngestionIntentRow)
                .where(
                    IngestionIntentRow.id.in_(ids),
                    IngestionIntentRow.state == WRITING,
                    IngestionIntentRow.updated_at_us < cutoff,
                )
                .values(state=RECLAIMING)  # its stamp kept: the order a pass takes them in (below)
                .execution_options(synchronize_session=False)
            )
    with read_session(sessions) as session:
        query = select(
            IngestionIntentRow.id, IngestionIntentRow.token, IngestionIntentRow.run_id,
            IngestionIntentRow.view, IngestionIntentRow.version, IngestionIntentRow.paths,
        ).where(IngestionIntentRow.state == RECLAIMING)  # fmt: skip
        # Oldest first: an intent whose files could not be removed was moved behind those taken since.
        order = (IngestionIntentRow.updated_at_us, IngestionIntentRow.id)
        taken = session.execute(query.order_by(*order).limit(RECOVERY_BATCH)).all()
    outcome = Recovery()
    errors: list[str] = []
    for row_id, token, run_id, view, version, paths in taken:
        intent = Intent(row_id, run_id, (), token)
        try:
            intent = Intent(row_id, run_id, _paths(paths), token)
            foreign = [path for path in intent.paths if owns is not None and not owns(path, view, version)]
            if foreign:
                raise ValueError(
                    f"names paths that are not the offline store's files of {view!r} version {version}:"
                    f" {foreign}"
                )
        except ValueError as exc:  # unparseable or foreign: never acted on, kept for an operator
            _invalidate(sessions, intent, str(exc))
            outcome.invalid += 1
            continue
        try:
            gone = remove(intent.paths)
        except Exception as exc:  # the store out of reach, or a path it refuses: retried later
            gone = False
            errors.append(f"{type(exc).__name__}: {exc}")
        if not gone:
            _to_the_back(sessions, intent)
            outcome.failed += 1
            continue
        with write_session(sessions) as session:
            session.execute(
                delete(IngestionIntentRow).where(_this(intent), IngestionIntentRow.state == RECLAIMING)
            )
        outcome.intents += 1
        outcome.removed.setdefault(intent.run_id, []).extend(intent.paths)
    for run_id, removed in outcome.removed.items():
        _log.warning(
            "run %s left offline files no run counts (killed between its offline write and its commit, or"
            " its commit's outcome unknown); removed %s", run_id, removed,
        )  # fmt: skip
    if outcome.failed:  # one line a pass, however many intents (the store down fails them all)
        _log.error(
            "the offline files of %d uncounted chunk(s) could not all be removed; retried in a later pass"
            "%s", outcome.failed, f" (first error: {errors[0]})" if errors else "",
        )  # fmt: skip
    return outcome


def _paths(stored: str) -> tuple[str, ...]:
    """An intent's paths column, parsed; ValueError when it is not a JSON list of strings."""
    paths = json.loads(stored)  # JSONDecodeError is a ValueError
    if not isinstance(paths, list) or not all(isinstance(path, str) for path in paths):
        raise ValueError(f"names no list of paths: {stored[:200]!r}")
    return tuple(paths)


def _to_the_back(sessions: sessionmaker[Session], intent: Intent) -> None:
    """Moves a taken intent whose files could not be removed behind the others (its ``updated_at_us``
    to now), so the intents after it in a full batch are not starved by it pass after pass."""
    with write_session(sessions) as session:
        session.execute(
            update(IngestionIntentRow)
            .where(_this(intent), IngestionIntentRow.state == RECLAIMING)
            .values(updated_at_us=database_now_us(session))
            .execution_options(synchronize_session=False)
        )


def _invalidate(sessions: sessionmaker[Session], intent: Intent, reason: str) -> None:
    """Marks a taken intent ``invalid`` (kept for an operator; no pass takes it again), logged once."""
    with write_session(sessions) as session:
        session.execute(
            update(IngestionIntentRow)
            .where(_this(intent), IngestionIntentRow.state == RECLAIMING)
            .values(state=INVALID)
            .execution_options(synchronize_session=False)
        )
    _log.error(
        "intent %d of run %s %s; marked %r and kept for an operator, nothing of it removed",
        intent.id, intent.run_id, reason, INVALID,
    )  # fmt: skip
