"""The outbox's applied-receipt rows (``ingestion_receipts``) against a real redis-server, on SQLite and
PostgreSQL: they stay bounded however many drains run (one row per receipt ever drained grew the table
without end), and pruning them never lets a receipt count twice, even for a drainer that read it before
it was applied and pruned."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyarrow as pa
import redis
from sqlalchemy import func, select

from control_plane.db import read_session
from control_plane.ingestion import quarantine
from control_plane.ingestion.quarantine import RunSource
from control_plane.ingestion.streaming.commit import ipc_bytes
from control_plane.ingestion.streaming.outbox import drain
from control_plane.ingestion.streaming.state_keys import StateKeys
from control_plane.ingestion.tables import IngestionIntentRow, IngestionReceiptRow
from control_plane.offline.store import OfflineStore
from tests.integration.ingestion.conftest import Env
from tests.integration.ingestion.test_stream_commit import history, rejected

KEYS = StateKeys.of("clicks", 1, "g")
RUN = RunSource("stream:test", "clicks", 1, "stream", "events:commit")


def put_receipt(client: redis.Redis, receipt_id: str, start: int) -> None:
    """A committed batch's receipt in the outbox, as ``Committer.commit`` leaves it: 10 accepted rows
    and one rejected record."""
    fields = {
        "history": ipc_bytes(history(10, start)),
        "rejected": ipc_bytes(rejected([f"{receipt_id}-0"])),
        "accepted": 10,
    }
    client.hset(KEYS.receipt(receipt_id), mapping=fields)
    client.rpush(KEYS.outbox, KEYS.receipt(receipt_id))


def receipt_rows(env: Env) -> int:
    with read_session(env.sessions) as session:
        return int(session.scalar(select(func.count()).select_from(IngestionReceiptRow)) or 0)


def stored_intents(env: Env) -> list[IngestionIntentRow]:
    with read_session(env.sessions) as session:
        return list(session.scalars(select(IngestionIntentRow)))


def counts(env: Env) -> tuple[int, int, int]:
    with read_session(env.sessions) as session:
        found = quarantine.run_counts(session, RUN.run_id)
    return found.records_in, found.accepted, found.quarantined


def test_receipt_rows_stay_bounded_however_many_drains_run(any_env: Env) -> None:
    for drained in range(30):
        for i in range(2):
            put_receipt(any_env.client, f"r{drained}-{i}", 20 * drained + 10 * i)
        assert drain(any_env.client, KEYS, any_env.sessions, any_env.offline, RUN) == 2
    # Only the last drain's rows are left: each drain prunes the rows of receipts gone from Redis.
    assert receipt_rows(any_env) == 2
    assert counts(any_env) == (60 * 11, 600, 60)
    stored = pa.Table.from_batches(list(any_env.offline.scan("clicks", 1)))
    assert sorted(stored.column("sensor_id").to_pylist()) == list(range(600))


class PausingOffline(OfflineStore):
    """An offline store that runs ``during[n]`` inside its ``n``-th write: it stops a drainer between its
    check of the receipts and the transaction that records them (a pause that only code stopped there can
    cause, as a fenced-out predecessor descheduled for a while); later writes go through."""

    def __init__(self, root: str, *during: Callable[[], None]) -> None:
        super().__init__(root)
        self._during = list(during)

    def write(
        self,
        view: str,
        version: int,
        table: pa.Table,
        announce: Callable[[Sequence[str]], None] | None = None,
    ) -> list[str]:
        written = super().write(view, version, table, announce)
        if self._during:
            self._during.pop(0)()
        return written


def test_a_receipt_read_before_it_was_applied_and_pruned_is_not_counted_again(any_env: Env) -> None:
    client, sessions = any_env.client, any_env.sessions
    put_receipt(client, "r0", 0)

    def another_drainer() -> None:
        # It applies r0 and removes it from Redis; its next drain (of r1) prunes r0's row.
        assert drain(client, KEYS, sessions, any_env.offline, RUN) == 1
        put_receipt(client, "r1", 10)
        assert drain(client, KEYS, sessions, any_env.offline, RUN) == 1
        with read_session(sessions) as session:
            assert session.get(IngestionReceiptRow, "r0") is None

    slow = PausingOffline(str(any_env.offline.root), another_drainer)
    # The slow drainer read r0 from Redis before the other applied it: its row is gone by the time the
    # slow one records, and the receipt's absence from Redis is what tells it r0 was applied.
    assert drain(client, KEYS, sessions, slow, RUN) == 0
    assert counts(any_env) == (22, 20, 2)
    assert client.llen(KEYS.outbox) == 0
    # The slow drainer counted nothing, so the files it wrote (r0's rows again) are removed at once
    # (``outbox._Written.discard``), and so is their intent: the store holds each counted row once.
    stored = pa.Table.from_batches(list(any_env.offline.scan("clicks", 1)))
    assert sorted(stored.column("sensor_id").to_pylist()) == list(range(20))
    assert not stored_intents(any_env)
