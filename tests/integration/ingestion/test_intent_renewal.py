"""A chunk's intent is renewed while its writer works (``ingestion/intent_lease.py``), with real SQLite
files and PostgreSQL, a real redis-server and real Parquet files:

* a batch run whose chunk's write and commit take three times the lease, with a recovery pass every
  quarter of a second meanwhile, keeps its intent and is counted (before, the first pass past the lease
  took the intent, removed the files and the chunk was refused at its commit: a large but healthy
  ingestion failed);
* a writer whose renewal finds its intent taken by a recovery pass (it stalled past the lease) removes
  the files it wrote after the recovery and fails with ``IntentLost``, leaving nothing uncounted.

The lease is shortened to seconds (``lease_s``) and renewed every 0.1 s, so a renewal can be missed only
by a thread starved for most of the lease."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa
import pytest

from control_plane.ingestion import intents
from control_plane.ingestion.batch import BatchMaterializer
from control_plane.ingestion.intent_lease import IntentLease
from control_plane.ingestion.intents import IntentLost, Recovery
from control_plane.offline.store import OfflineStore
from tests.integration.ingestion.conftest import Stand
from tests.integration.ingestion.test_chunk_commit_failure import chunk
from tests.integration.ingestion.test_chunk_intents import remove_files

LEASE_S = 2.0
RENEW_EVERY_S = 0.1


class SlowWrite(OfflineStore):
    """An offline store whose writes take ``stall_s`` more once their files are in place, with an intent
    recovery pass (the lease of ``batch``) every quarter of a second meanwhile."""

    def __init__(self, root: str, stall_s: float) -> None:
        super().__init__(root)
        self.batch: BatchMaterializer | None = None
        self._stall_s = stall_s
        self.passes: list[Recovery] = []

    def write(
        self,
        view: str,
        version: int,
        table: pa.Table,
        announce: Callable[[Sequence[str]], None] | None = None,
    ) -> list[str]:
        paths = super().write(view, version, table, announce)
        deadline = time.monotonic() + self._stall_s
        while time.monotonic() < deadline:
            time.sleep(0.25)
            assert self.batch is not None
            self.passes.append(self.batch.recover_intents())
        return paths


def renewing_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("intent-")]


def test_a_chunk_whose_write_outlasts_the_lease_three_times_is_counted(stand: Stand, tmp_path: Path) -> None:
    store = SlowWrite(str(tmp_path / "offline"), stall_s=3 * LEASE_S)
    batch = BatchMaterializer(
        stand.db.sessions, store, stand.client, lease_s=LEASE_S, renew_every_s=RENEW_EVERY_S
    )
    store.batch = batch
    outcome = batch.materialize(stand.db.view, stand.db.entity, [chunk(0), chunk(1)])
    assert (outcome.records_in, outcome.accepted, outcome.quarantined) == (8, 6, 2)
    assert len(store.passes) >= 2  # each write's last one ran three leases after its announce
    assert all(recovery.intents == 0 for recovery in store.passes)  # never took a renewed intent
    assert len(store.files("climate", 1)) == 2 and stand.counted() == 6
    assert stand.intents() == []
    assert renewing_threads() == []  # renewals stopped with each chunk's transaction


def test_a_writer_whose_renewal_finds_its_intent_taken_removes_its_files_and_fails(
    stand: Stand, tmp_path: Path
) -> None:
    """The recovery takes the intent between the announce and the write (the writer stalled past the
    lease there): it finds no file to remove, and the files written after it are named by no intent.
    The renewal finds the intent gone, and the writer removes them itself and fails."""
    store = OfflineStore(str(tmp_path / "offline"))
    lease = IntentLease(
        stand.db.sessions, "batch-stalled", "climate", 1, 0, lease_s=LEASE_S, renew_every_s=RENEW_EVERY_S
    )
    taken: list[Recovery] = []

    class StallsAfterAnnounce(OfflineStore):
        def write(
            self,
            view: str,
            version: int,
            table: pa.Table,
            announce: Callable[[Sequence[str]], None] | None = None,
        ) -> list[str]:
            def announce_then_stall(paths: Sequence[str]) -> None:
                assert announce is not None
                announce(paths)
                taken.append(intents.recover(stand.db.sessions, remove_files, lease_s=0.0))
                deadline = time.monotonic() + 30  # a renewal comes every 0.1 s: a generous bound
                while not lease.lost and time.monotonic() < deadline:
                    time.sleep(0.05)

            return super().write(view, version, table, announce_then_stall)

    stalled = StallsAfterAnnounce(store.root)
    rows = chunk(0).append_column("ingested_ts", chunk(0).column("event_ts"))
    with pytest.raises(IntentLost, match="taken by the intent recovery while the chunk was being written"):
        lease.write(stalled, rows)
    assert lease.lost
    (recovery,) = taken
    assert recovery.intents == 1  # it took the intent, and found no file yet
    assert store.files("climate", 1) == []  # the writer removed what it wrote after the recovery
    assert stand.intents() == []
    assert renewing_threads() == []
