"""``online_pending`` records: a batch record stored offline and counted whose online value is not
written yet, and the holds that keep two writers from writing it (on the caller's SQL session, as
``quarantine``'s functions are).

A batch view's record is committed ``online_pending`` once its row is in the offline store (and counted),
then ``replayed`` once its online value is written. While a replay writes it online the record is held
as a claim is, ``updated_at_us`` the replay's stamp (refused to other replays and discards, taken over
after the lease); a failed online write hands it over at once (``updated_at_us`` 0: no replay holds it).
The next replay of it holds it the same way (``take_online``) and writes only its online value, never its
offline row again, with the ingestion time of that row (``ingested_at_us``, kept when it was committed; see
``online_completion``); unheld, two replays both wrote it and both reported and audited it. A discard takes
one no replay holds (its view version retired or deleted, its online value not wanted): its row stays
stored offline, and the run that stored it keeps counting it accepted, as a discarded quarantined record
stays counted quarantined, so every run still adds up.

A batch run files its online part (``file_online_part``) in the transaction of the first chunk that
stores rows, held by the run as a replay holds its records (renewed while it works, ``renew_online_part``;
see ``online_hold``), names each later chunk's files in it in that chunk's transaction
(``extend_online_part``), and removes it once its online values are written
(``settle_online_part``); a run that fails part-way hands it to the next replay at once, and a run killed
in between leaves it to a replay, which takes it over after the lease. Filed only in the last chunk's
transaction, a source that failed to read part-way left the earlier chunks' rows stored and counted with
no online value and no record of them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.orm import Session

from control_plane.ingestion.claims import CLAIM_LEASE_S, Claim
from control_plane.ingestion.quarantine import (
    ONLINE_PENDING,
    REPLAYED,
    RunSource,
    id_slices,
    now_us,
    rowcount,
)
from control_plane.ingestion.tables import QuarantineRow


def unheld(session: Session, ids: Sequence[int], lease_s: float = CLAIM_LEASE_S) -> list[int]:
    """Those of ``ids`` that are ``online_pending`` and held by no live replay, in the given order."""
    lapsed_before = now_us() - int(lease_s * 1_000_000)
    found: set[int] = set()
    for part in id_slices(sorted(set(ids))):
        query = select(QuarantineRow.id).where(
            QuarantineRow.id.in_(part),
            QuarantineRow.status == ONLINE_PENDING,
            QuarantineRow.updated_at_us < lapsed_before,
        )
        found.update(session.scalars(query))
    return [record_id for record_id in dict.fromkeys(ids) if record_id in found]


#: The record key of a batch run's online part (one record per run; see ``file_online_part``). A run
#: that lost its hold files the files it stores after that in another record, ``online.2``, ``online.3``...
ONLINE_PART_KEY = "online"


def online_part_key(number: int) -> str:
    """The key of a run's ``number``-th online part (1: :data:`ONLINE_PART_KEY`)."""
    return ONLINE_PART_KEY if number == 1 else f"{ONLINE_PART_KEY}.{number}"


def is_online_part(record_key: str) -> bool:
    """Whether a record is a batch run's online part (a rejected record's key is a row number)."""
    head, dot, number = record_key.partition(".")
    return head == ONLINE_PART_KEY and (not dot or number.isdigit())


def file_online_part(
    session: Session, source: RunSource, offline_paths: Sequence[str], key: str = ONLINE_PART_KEY
) -> int:
    """Files, in the caller's transaction (a batch run's first chunk that stores rows), the run's online
    part before it is written: one ``online_pending`` record of the run whose payload names the offline
    files the run wrote (its latest row per entity is theirs; ``extend_online_part`` adds later ones),
    held by the run (``updated_at_us`` the returned stamp), as a replay holds the records it writes
    online. A run killed between that commit and its online write used to leave its rows stored and
    counted with no online value and no record of it (re-ingesting stored them twice); now the record
    waits, and a replay takes it over after the lease. The counters do not move: the run counted the rows
    accepted already.

    One record per run, not one per entity: 100,000 entities' rows as JSON payloads took ~2 s to build,
    insert and delete, on a run of 1,000,000 rows that takes ~1.1 s, and as many record ids (a 32-bit
    column) per run; the files hold those rows already."""
    stamp = now_us()
    payload = json.dumps({"offline_files": list(offline_paths)})
    session.execute(
        insert(QuarantineRow),
        [
            {
                "run_id": source.run_id, "record_key": key, "view": source.view,
                "version": source.version, "source_kind": source.kind, "source_id": source.source_id,
                "payload": payload, "status": ONLINE_PENDING, "created_at_us": stamp, "updated_at_us": stamp,
                "reason": "online values not written yet: the run's latest row per entity, in its offline"
                " files; a replay writes them",
            }
        ],
    )  # fmt: skip
    return stamp


def extend_online_part(
    session: Session, run_id: str, stamp: int, offline_paths: Sequence[str], key: str = ONLINE_PART_KEY
) -> int:
    """Names, in the caller's transaction (a later chunk's), every offline file the run has written so
    far in its online part, and renews the run's hold on it (the returned stamp), as a replay renews its
    claim before each write: a run whose chunks together outlast the lease keeps it while it is alive.
    Returns the new stamp, or 0 when a replay took the record over (the run went a lease without
    renewing it): that replay writes the files it names online, and the run files the later ones in a
    record of its own (``online_hold``)."""
    renewed = now_us()
    statement = (
        update(QuarantineRow)
        .where(_held_by_run(run_id, stamp, key))
        .values(payload=json.dumps({"offline_files": list(offline_paths)}), updated_at_us=renewed)
        .execution_options(synchronize_session=False)
    )
    return renewed if rowcount(session.execute(statement)) else 0


def renew_online_part(
    session: Session, run_id: str, stamp: int, key: str = ONLINE_PART_KEY, renewed: int = 0
) -> int:
    """Renews the run's hold on its online part while it works (the run's heartbeat, ``online_hold``) to
    ``renewed`` (default: now); the new stamp, or 0 when it holds it no longer (a replay took it over, or
    it was settled)."""
    renewed = renewed or now_us()
    statement = (
        update(QuarantineRow)
        .where(_held_by_run(run_id, stamp, key))
        .values(updated_at_us=renewed)
        .execution_options(synchronize_session=False)
    )
    return renewed if rowcount(session.execute(statement)) else 0


def _held_by_run(run_id: str, stamp: int, key: str = ONLINE_PART_KEY) -> Any:
    return and_(
        QuarantineRow.run_id == run_id,
        QuarantineRow.record_key == key,
        QuarantineRow.status == ONLINE_PENDING,
        QuarantineRow.updated_at_us == stamp,
    )


def settle_online_part(
    session: Session, run_id: str, stamp: int, error: str | None = None, key: str = ONLINE_PART_KEY
) -> int:
    """Ends the run's hold on its online part (one statement, conditional on the hold's ``stamp``, so a
    replay that took it over keeps it): with no ``error`` the online values are written and the record
    goes; with one it is handed to the next replay at once, saying why. Returns how many records."""
    held_by_run = _held_by_run(run_id, stamp, key)
    if error is None:
        statement: Any = delete(QuarantineRow).where(held_by_run)
    else:
        values = {"updated_at_us": 0, "reason": f"online values not written: {error}"}
        statement = update(QuarantineRow).where(held_by_run).values(**values)
    return rowcount(session.execute(statement.execution_options(synchronize_session=False)))


def take_online(session: Session, ids: Sequence[int], lease_s: float = CLAIM_LEASE_S) -> Claim:
    """Holds for a replay, in the caller's transaction, those of ``ids`` that are ``online_pending`` and
    held by no live replay (``updated_at_us`` set to the hold's stamp; the status stays), so that of two
    replays of one only the first writes its online value; the others are the caller's to ``claim``.
    Locked in id order first, as ``claim`` does."""
    stamp = now_us()
    lapsed_before = stamp - int(lease_s * 1_000_000)
    free: dict[int, int] = {}
    for part in id_slices(sorted(set(ids))):
        query = (
            select(QuarantineRow.id, QuarantineRow.updated_at_us)
            .where(
                QuarantineRow.id.in_(part),
                QuarantineRow.status == ONLINE_PENDING,
                QuarantineRow.updated_at_us < lapsed_before,
            )
            .order_by(QuarantineRow.id)
            .with_for_update()
        )
        free.update((row.id, row.updated_at_us) for row in session.execute(query))
    for part in id_slices(sorted(free)):
        session.execute(
            update(QuarantineRow)
            .where(
                QuarantineRow.id.in_(part),
                QuarantineRow.status == ONLINE_PENDING,
                QuarantineRow.updated_at_us < lapsed_before,
            )
            .values(updated_at_us=stamp)
            .execution_options(synchronize_session=False)
        )
    taken_over = sorted(i for i, at in free.items() if at)  # 0: handed over, not a dead replay's
    return Claim([i for i in dict.fromkeys(ids) if i in free], stamp, taken_over)


def _held_online(hold: Claim, part: Sequence[int]) -> Any:
    return and_(
        QuarantineRow.id.in_(part),
        QuarantineRow.status == ONLINE_PENDING,
        QuarantineRow.updated_at_us == hold.stamp,
    )


def free_online(session: Session, hold: Claim, ids: Sequence[int]) -> None:
    """Hands those of ``ids`` that ``hold`` still holds to the next replay at once (their online write
    failed, or the replay did before it)."""
    for part in id_slices(sorted(set(ids))):
        session.execute(
            update(QuarantineRow)
            .where(_held_online(hold, part))
            .values(updated_at_us=0)
            .execution_options(synchronize_session=False)
        )


def finish_online(session: Session, hold: Claim, ids: Sequence[int]) -> list[int]:
    """Marks ``replayed`` those of ``ids`` that ``hold`` still holds (their online values are written)
    and returns them; one another replay took over once the hold outlasted the lease is its to mark."""
    marked: list[int] = []
    for part in id_slices(sorted(set(ids))):
        query = select(QuarantineRow.id).where(_held_online(hold, part)).with_for_update()
        marked += session.scalars(query)
    set_to = {"status": REPLAYED, "updated_at_us": now_us()}
    for part in id_slices(marked):
        session.execute(
            update(QuarantineRow)
            .where(_held_online(hold, part))
            .values(**set_to)
            .execution_options(synchronize_session=False)
        )
    found = set(marked)
    return [i for i in ids if i in found]
