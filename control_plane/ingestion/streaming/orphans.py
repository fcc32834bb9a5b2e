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
earlier drains created). With none or several such runs it is left, with a warning: counting it to a
guessed run would be wrong, and the next pass tries again.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db import read_session
from control_plane.features.online_cleanup import deleted_view_fence, materializer_prefix
from control_plane.ingestion.quarantine import RunSource
from control_plane.ingestion.streaming.commit import RECEIPT_RUN, StateKeys
from control_plane.ingestion.streaming.outbox import apply, listed
from control_plane.ingestion.tables import IngestionRunRow
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
    if unnamed:  # committed before receipts named their run
        group = keys.prefix.removeprefix(materializer_prefix(view, version))
        run = _run_of_group(sessions, view, version, group)
        if run is None:
            _log.warning(
                "%d receipts in %s name no run, and no single stream run of %r version %d has group %r:"
                " left in Redis",
                len(unnamed), keys.outbox, view, version, group,
            )  # fmt: skip
        else:
            by_run[run] += unnamed
    applied = 0
    for (run_id, source_id), mine in by_run.items():
        source = RunSource(run_id, view, version, "stream", source_id)
        applied += apply(client, keys, sessions, offline, source, mine)
    return applied


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
    found = [(run_id, source_id) for run_id, source_id in rows if run_id.endswith(tail)]
    return found[0] if len(found) == 1 else None
