"""Drains the outboxes of a deleted view version, for the delete's online cleanup
(``features/online_cleanup.py``).

A materializer SIGKILLed with receipts in its outbox leaves them for its successor's start to drain
(``StreamMaterializer.start``). Once the version is deleted no successor can start (the registry no
longer has it), and a materializer running at the delete drains its own outbox before it stops; so the
receipts of one killed before the delete stayed in Redis for good, their rows never stored offline nor
counted (the run's records_in short of what its stream delivered and acknowledged). The cleanup drains
them instead, after the fence is set (no commit adds a receipt after it), through the same
``outbox.apply`` a materializer uses: its SQL re-check of receipt ids counts a receipt once even if a
materializer still running drains the same outbox at the same time.

A drain needs the receipt's run (its counters' row). Each receipt records it (``commit.RECEIPT_RUN``);
before that, the run id was derived from the stream's name, which no key holds, so a receipt committed
by an earlier version goes to the one stream run of the version whose id ends in its group (the run its
earlier drains created). With none or several such runs (a run id shortened to fit its column no longer
ends in the group; two streams read by one group give two runs), counting it to a guessed run would be
wrong, and no later pass can tell more: the version is deleted, so no run of it begins. Such receipts
were left in Redis for good (the docstring promised a next pass, but the cleanup marks the version done
after this drain), their rows never stored nor counted. They now go to a run of their own,
``unmatched:<group>:<view>:v<version>`` (``unmatched_run``), with a warning naming it and the records
counted: the messages were delivered, validated and acknowledged, so their accepted rows reach the
offline store and their rejected ones the quarantine, and that run's counters keep in = accepted +
quarantined, as the version's totals do. Deleting them instead would lose the rows and the counts.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db import read_session
from control_plane.features.online_cleanup import deleted_view_fence, materializer_prefix
from control_plane.ingestion.quarantine import RunSource, bounded_id, run_counts
from control_plane.ingestion.streaming.commit import RECEIPT_RUN
from control_plane.ingestion.streaming.outbox import apply, listed
from control_plane.ingestion.streaming.state_keys import StateKeys
from control_plane.ingestion.tables import RUN_ID_LENGTH, IngestionRunRow
from control_plane.offline.store import OfflineStore

_log = logging.getLogger("aether.ingestion.stream")
_OUTBOX = b":outbox"


def drain_outboxes(
    client: redis.Redis, sessions: sessionmaker[Session], offline: OfflineStore, view: str, version: int
) -> int:
    """Applies every receipt left in an outbox of the deleted ``view`` version (each consumer group's)
    and removes it; returns how many were applied. Call it after the version's fence is set."""
    applied = 0
    for key in client.scan_iter(match=materializer_prefix(view, version) + "*", count=1000):
        if isinstance(key, bytes) and key.endswith(_OUTBOX):
            keys = StateKeys(key[: -len(_OUTBOX)].decode(), deleted_view_fence(view, version))
            applied += _drain_outbox(client, sessions, offline, keys, view, version)
    return applied


def _drain_outbox(
    client: redis.Redis,
    sessions: sessionmaker[Session],
    offline: OfflineStore,
    keys: StateKeys,
    view: str,
    version: int,
) -> int:
    receipt_keys = listed(client, keys)
    pipeline = client.pipeline(transaction=False)
    for key in receipt_keys:
        pipeline.exists(key)
        pipeline.hmget(key, list(RECEIPT_RUN))
    replies = pipeline.execute()
    by_run: dict[tuple[str, str], list[str]] = defaultdict(list)
    unnamed: list[str] = []
    for key, exists, (run_id, source_id) in zip(receipt_keys, replies[::2], replies[1::2], strict=True):
        if not exists:  # listed but emptied: nothing to count, only to take off the list (any run does)
            by_run[("", "")].append(key)
        elif run_id is None:
            unnamed.append(key)
        else:
            by_run[(run_id.decode(), source_id.decode())].append(key)
    unmatched: RunSource | None = None
    if unnamed:  # committed before receipts named their run
        group = keys.prefix.removeprefix(materializer_prefix(view, version))
        run = _run_of_group(sessions, view, version, group)
        if run is None:
            unmatched = unmatched_run(view, version, group)
            run = (unmatched.run_id, unmatched.source_id)
        by_run[run] += unnamed
    applied = unmatched_applied = 0
    for (run_id, source_id), mine in by_run.items():
        source = RunSource(run_id, view, version, "stream", source_id)
        count = apply(client, keys, sessions, offline, source, mine)
        applied += count
        if unmatched is not None and run_id == unmatched.run_id:
            unmatched_applied = count
    if unmatched is not None and unmatched_applied:  # else another drainer counted them
        with read_session(sessions) as session:
            counts = run_counts(session, unmatched.run_id)
        _log.warning(
            "%d receipts in %s name no run, and no single stream run of %r version %d has group %r: counted"
            " to run %r (now %d records in: %d accepted, %d quarantined)",
            unmatched_applied, keys.outbox, view, version, group, unmatched.run_id,
            counts.records_in, counts.accepted, counts.quarantined,
        )  # fmt: skip
    return applied


def unmatched_run(view: str, version: int, group: str) -> RunSource:
    """The run that counts a deleted version's receipts whose run is unknown (see the module doc): not
    ``stream:``, so it is never taken for a materializer's run (``_run_of_group``)."""
    run_id = bounded_id(f"unmatched:{group}:{view}:v{version}", RUN_ID_LENGTH)
    return RunSource(run_id, view, version, "stream", "unknown stream")


def _run_of_group(
    sessions: sessionmaker[Session], view: str, version: int, group: str
) -> tuple[str, str] | None:
    """(run id, source) of the version's one stream run whose id names ``group`` (``stream:<stream>:
    <group>:<view>:v<version>``, as ``StreamMaterializer`` derives it); None with none or several."""
    with read_session(sessions) as session:
        rows = session.execute(
            select(IngestionRunRow.run_id, IngestionRunRow.source_id).where(
                IngestionRunRow.view == view,
                IngestionRunRow.version == version,
                IngestionRunRow.source_kind == "stream",
            )
        ).all()
    tail = f":{group}:{view}:v{version}"
    found = [(i, source) for i, source in rows if i.startswith("stream:") and i.endswith(tail)]
    return found[0] if len(found) == 1 else None
