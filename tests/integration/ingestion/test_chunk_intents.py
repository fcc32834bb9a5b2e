"""A chunk's offline files whose counting transaction never committed are removed by the intent recovery
(``ingestion/intents.py``), with real SQLite files and PostgreSQL, a real redis-server, real Parquet files
on a local folder and on an S3-style object store:

* a batch run, or a replay's batch group, SIGKILLed between its offline write and its commit (the named
  fault :class:`DiesAfterWrite`, in a process of its own) leaves its files and their intent; a pass while
  the intent is younger than the lease leaves them (the run may still be alive), a pass after it
  removes them, and the store then holds exactly the rows the runs count;
* a chunk whose COMMIT fails and whose outcome cannot be read back (the fake :class:`LosesCommitAndReads`:
  the COMMIT's reply, or the COMMIT itself, is lost, and then the database does not answer) keeps its
  files iff it committed once the recovery has run;
* a run whose intent a recovery took before its commit (its write and commit outlasted the lease) is
  refused at the commit (``IntentLost``), counting nothing and leaving no file;
* on PostgreSQL, a recovery pass and a chunk's commit racing for one intent: whichever locks its row
  first wins, and the other finds it changed (real transactions interleaved, ``pg_interleave``);
* the control plane's ingestion service runs a pass when it starts.
Before, each of these left files no run counted, read by every training set and join."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pytest
from sqlalchemy import Engine, event, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from clients.errors import FailedPrecondition, Internal
from control_plane.api.ingestion import add_to_server
from control_plane.db import create_session_factory, read_session, write_session
from control_plane.ingestion import chunk_commit, intents, quarantine
from control_plane.ingestion.batch import BatchMaterializer
from control_plane.ingestion.intents import IntentLost
from control_plane.ingestion.service import IngestionService
from control_plane.ingestion.tables import IngestionIntentRow
from control_plane.offline.store import OfflineStore
from control_plane.server import start_server
from control_plane.settings import ControlPlaneSettings
from tests.integration.ingestion.conftest import CLIMATE, Stand, registry_on
from tests.integration.ingestion.test_chunk_commit_failure import FailsOneCommit, chunk
from tests.support import killed_script
from tests.support.pg_interleave import HeldTransaction, race_against

# A batch run (or a replay) in a process of its own, which SIGKILLs itself once its ``die_at``-th offline
# write has put its files in place, before the transaction that counts them: the named fault.
_DYING_RUN = """
import os, signal, sys

import redis

from control_plane.db import create_db_engine, create_session_factory
from control_plane.features.registry import FeatureRegistry
from control_plane.ingestion.service import IngestionService
from control_plane.offline.store import OfflineStore
from tests.integration.ingestion.test_chunk_commit_failure import chunk


class DiesAfterWrite(OfflineStore):
    def __init__(self, root, die_at):
        super().__init__(root)
        self._left = die_at

    def write(self, view, version, table, announce=None):
        paths = super().write(view, version, table, announce)
        self._left -= 1
        if self._left == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        return paths


db_url, redis_url, offline_root, mode, arg = sys.argv[1:6]
sessions = create_session_factory(create_db_engine(db_url))
store = DiesAfterWrite(offline_root, int(arg) if mode == "batch" else 1)
service = IngestionService(sessions, FeatureRegistry(sessions), store, redis.Redis.from_url(redis_url))
if mode == "batch":
    service.ingest("climate", 1, [chunk(k) for k in range(3)])
else:
    record_id, payload = arg.split(":", 1)
    service.replay([int(record_id)], {int(record_id): payload})
"""


def run_until_killed(db_url: str, redis_url: str, root: str, mode: str, arg: str) -> None:
    killed_script.run_until_killed(_DYING_RUN, db_url, redis_url, root, mode, arg)


def test_a_run_killed_between_its_offline_write_and_its_commit_leaves_files_the_recovery_removes(
    any_stand: Stand, redis_url: str
) -> None:
    stand = any_stand
    url = stand.db.engine.url.render_as_string(hide_password=False)
    run_until_killed(url, redis_url, stand.offline.root, "batch", "2")
    (run,) = stand.runs()
    assert (run.records_in, run.accepted, run.quarantined) == (4, 3, 1)  # chunk 0 counted, chunk 1 not
    assert stand.stored_rows() == 6  # chunk 1's rows, stored and counted by no run (the defect)
    (intent,) = stand.intents()
    assert (intent.run_id, intent.chunk, intent.state) == (run.run_id, 1, "writing")
    uncounted = json.loads(intent.paths)
    assert len(uncounted) == 1 and uncounted[0] in stand.offline.files("climate", 1)

    # Younger than the lease: the run may be alive and about to commit it; nothing is removed.
    assert stand.batch.recover_intents().intents == 0
    assert stand.stored_rows() == 6
    # Past the lease, its files go, and then its intent.
    recovery = stand.batch.recover_intents(lease_s=0.0)
    assert (recovery.intents, recovery.failed, recovery.removed) == (1, 0, {run.run_id: uncounted})
    assert stand.stored_rows() == stand.counted() == 3
    assert stand.intents() == []
    assert uncounted[0] not in stand.offline.files("climate", 1)
    assert stand.batch.recover_intents(lease_s=0.0).intents == 0


def test_a_replay_killed_between_its_groups_write_and_its_commit_leaves_files_the_recovery_removes(
    stand: Stand, redis_url: str
) -> None:
    stand.batch.materialize(stand.db.view, stand.db.entity, [chunk(0)])  # sensor 899 quarantined
    with read_session(stand.db.sessions) as session:
        (record,) = quarantine.list_quarantined(session, view="climate")
    fixed = json.dumps({**json.loads(record.payload), "temperature_c": 20.0})
    url = stand.db.engine.url.render_as_string(hide_password=False)
    run_until_killed(url, redis_url, stand.offline.root, "replay", f"{record.id}:{fixed}")
    assert stand.stored_rows() == 4 and stand.counted() == 3
    (intent,) = stand.intents()
    assert intent.run_id.startswith("replay-")

    assert stand.batch.recover_intents(lease_s=0.0).intents == 1
    assert stand.stored_rows() == stand.counted() == 3
    # The record, left claimed by the dead replay, is taken over after the lease and written once.
    service = IngestionService(
        stand.db.sessions, stand.db.registry, stand.offline, stand.client, claim_lease_s=0
    )
    assert service.replay([record.id], {record.id: fixed}).replayed == [record.id]
    assert stand.stored_rows() == stand.counted() == 4
    assert stand.intents() == []


class LosesCommitAndReads(FailsOneCommit):
    """A fake, as :class:`FailsOneCommit` (a chunk's COMMIT fails after or before the database
    committed), after which the database does not answer the session's statements (``down``) until the
    test brings it back: the run cannot read back whether its chunk committed."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        super().__init__(sessions)
        self.down = False
        event.listen(sessions, "do_orm_execute", self._execute)

    def _fails(self, session: Session, landed: bool) -> bool:
        failed = super()._fails(session, landed)
        self.down = self.down or failed
        return failed

    def _execute(self, _state: ORMExecuteState) -> None:
        if self.down:
            raise OperationalError("SELECT", None, ConnectionRefusedError("database down (fake)"))


@pytest.mark.parametrize("landed", [True, False], ids=["committed", "not-committed"])
def test_a_commit_whose_outcome_cannot_be_read_back_keeps_its_files_iff_it_committed(
    stand: Stand, landed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chunk_commit, "RESOLVE_WITHIN_S", 0.3)
    fault = LosesCommitAndReads(stand.db.sessions)

    def source() -> Iterator[pa.Table]:
        yield chunk(0)
        fault.armed = landed  # chunk 1's COMMIT fails
        yield chunk(1)

    # Chunk 1's outcome was not known: the error says so (its rows may be counted).
    lost = "reply to COMMIT lost" if landed else "connection lost"
    with pytest.raises(Internal, match=rf"{lost}.*whether its last chunk's 3 accepted rows were counted"):
        stand.batch.materialize(stand.db.view, stand.db.entity, source())
    assert fault.down
    fault.down = False  # the database is back
    assert stand.stored_rows() == 6  # the outcome was unknown: the run kept chunk 1's files
    assert stand.counted() == (6 if landed else 3)
    assert len(stand.intents()) == (0 if landed else 1)  # a committed chunk deleted its intent

    stand.batch.recover_intents(lease_s=0.0)
    assert stand.stored_rows() == stand.counted() == (6 if landed else 3)
    assert stand.intents() == []


class RecoveryDuringWrite(OfflineStore):
    """An offline store whose second write, once its files are in place, has the intent recovery run as
    if the writer had outlasted the lease: first with the lease (nothing is taken), then past it."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.batch: BatchMaterializer | None = None
        self.writes = 0
        self.taken: list[str] = []

    def write(
        self,
        view: str,
        version: int,
        table: pa.Table,
        announce: Callable[[Sequence[str]], None] | None = None,
    ) -> list[str]:
        paths = super().write(view, version, table, announce)
        self.writes += 1
        if self.writes == 2 and self.batch is not None:
            assert self.batch.recover_intents().intents == 0  # a live run's intent is left alone
            recovery = self.batch.recover_intents(lease_s=0.0)
            self.taken = [path for removed in recovery.removed.values() for path in removed]
        return paths


def test_a_run_whose_intent_the_recovery_took_is_refused_at_its_commit(stand: Stand, tmp_path: Path) -> None:
    store = RecoveryDuringWrite(str(tmp_path / "offline"))
    batch = BatchMaterializer(stand.db.sessions, store, stand.client)
    store.batch = batch
    # Chunk 0 stored and counted: FAILED_PRECONDITION saying so, on the lost intent.
    with pytest.raises(FailedPrecondition, match=r"lapsed.*counted 4 records") as refused:
        batch.materialize(stand.db.view, stand.db.entity, [chunk(0), chunk(1), chunk(2)])
    assert isinstance(refused.value.__cause__, IntentLost)
    assert len(store.taken) == 1 and not Path(store.taken[0]).exists()
    (run,) = stand.runs()
    assert (run.records_in, run.accepted, run.quarantined) == (4, 3, 1)  # chunk 1 counted nothing
    assert stand.stored_rows() == stand.counted() == 3
    assert stand.intents() == []


def lapsed_and_young(db_url: str, root: str) -> tuple[intents.Intent, intents.Intent]:
    """Two intents with a file each: one that lapsed (backdated, as if its run died ten minutes ago) and
    one younger than the lease."""
    db = registry_on(db_url, CLIMATE)
    offline = OfflineStore(root)
    announced: list[intents.Intent] = []
    for k in range(2):

        def announce(paths: Sequence[str], k: int = k) -> None:
            announced.append(intents.announce(db.sessions, f"batch-dead-{k}", "climate", 1, 0, paths))

        rows = chunk(k).append_column("ingested_ts", chunk(k).column("event_ts"))
        offline.write("climate", 1, rows, announce=announce)
    lapsed, young = announced
    with write_session(db.sessions) as session:
        session.execute(
            update(IngestionIntentRow)
            .where(IngestionIntentRow.id == lapsed.id)
            .values(updated_at_us=IngestionIntentRow.updated_at_us - 600_000_000)
        )
    db.engine.dispose()
    assert all(Path(intent.paths[0]).exists() for intent in announced)
    return lapsed, young


def exists(path: str) -> bool:
    return Path(path).exists()


async def test_the_control_plane_runs_a_recovery_pass_when_it_starts(
    tmp_path: Path, db_url: str, redis_url: str
) -> None:
    """The ingestion service's start removes a lapsed intent's file, and leaves a young one's."""
    lapsed, young = lapsed_and_young(db_url, str(tmp_path / "offline"))
    settings = ControlPlaneSettings(
        home=tmp_path, db_url=db_url, redis_url=redis_url, listen_addr="127.0.0.1:0",
        offline_root=str(tmp_path / "offline"),
    )  # fmt: skip
    server = await start_server(settings, services=[add_to_server])
    try:
        assert not exists(lapsed.paths[0])
        assert exists(young.paths[0])
        with server.context.engine.connect() as connection:
            left = connection.execute(text("SELECT run_id FROM ingestion_intents")).scalars().all()
        assert left == ["batch-dead-1"]
    finally:
        await server.stop()


def written_with_intent(sessions: sessionmaker[Session], root: str) -> intents.Intent:
    """A real Parquet file and its intent, as a chunk's offline write leaves them before its commit."""
    announced: list[intents.Intent] = []

    def announce(paths: Sequence[str]) -> None:
        announced.append(intents.announce(sessions, "batch-racing", "climate", 1, 0, paths))

    OfflineStore(root).write("climate", 1, chunk(0).append_column("ingested_ts", chunk(0).column("event_ts")),
                             announce=announce)  # fmt: skip
    return announced[0]


def remove_files(paths: Sequence[str]) -> bool:
    for path in paths:
        Path(path).unlink(missing_ok=True)
    return True


def test_a_recovery_racing_a_chunk_commit_on_postgresql_keeps_the_files_it_committed(
    pg_engine: Engine, tmp_path: Path
) -> None:
    """Real PostgreSQL transactions interleaved: the chunk's transaction has deleted its intent and not
    yet committed when a recovery pass past the lease tries to take it; the pass waits on the row, the
    chunk commits, and the pass then finds nothing to take: the counted chunk's file stays."""
    sessions = create_session_factory(pg_engine)
    intent = written_with_intent(sessions, str(tmp_path / "offline"))

    def chunk_deletes_its_intent(held: HeldTransaction) -> None:
        with held.session() as session:
            intents.settle_in(session, intent)
            session.flush()

    recovery = race_against(
        pg_engine, chunk_deletes_its_intent, lambda: intents.recover(sessions, remove_files, lease_s=0.0)
    )
    assert recovery.intents == 0
    assert Path(intent.paths[0]).exists()
    with read_session(sessions) as session:
        assert list(session.scalars(select(IngestionIntentRow))) == []


def test_a_chunk_commit_racing_a_recovery_on_postgresql_is_refused(pg_engine: Engine, tmp_path: Path) -> None:
    """The other order: a recovery pass has taken the intent (``reclaiming``) and not yet committed when
    the chunk's transaction deletes it; the chunk waits on the row and is then refused (IntentLost)."""
    sessions = create_session_factory(pg_engine)
    intent = written_with_intent(sessions, str(tmp_path / "offline"))

    def recovery_takes_it(held: HeldTransaction) -> None:
        held.execute(
            update(IngestionIntentRow)
            .where(IngestionIntentRow.id == intent.id)
            .values(state=intents.RECLAIMING)
        )

    def chunk_commits() -> None:
        with write_session(sessions) as session:
            intents.settle_in(session, intent)

    with pytest.raises(IntentLost):
        race_against(pg_engine, recovery_takes_it, chunk_commits)
    assert intents.recover(sessions, remove_files, lease_s=300.0).intents == 1  # the pass finishes it
    assert not Path(intent.paths[0]).exists()
