"""Training sets never read the rows of a chunk not yet counted: a real control plane (gRPC on loopback,
every ``db_url`` backend, real Parquet files) and a chunk's offline file with its open ingestion intent,
as a batch run leaves them between its offline write and the transaction that counts its rows (in
flight, or its writer killed and the recovery not yet run).

Before, readers listed the partition folders and read such a file like any other: the same training-set
request answered with rows no run counted, and answered otherwise once the recovery removed them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import ORMExecuteState

from clients.errors import OfflineStoreUnavailable, Unavailable
from clients.sdk.offline import OfflineFeaturesClient
from control_plane.api.offline_features import add_to_server
from control_plane.db import write_session
from control_plane.ingestion import intents
from control_plane.offline.data_files import remove_data_files
from control_plane.offline.store import OfflineStore
from control_plane.server import ControlPlaneServer, start_server
from control_plane.settings import ControlPlaneSettings
from tests.unit.offline.builders import (
    at,
    create_view,
    ensure_entity,
    entity_rows,
    feature_rows,
    feature_spec,
)


@pytest.fixture
async def server(tmp_path: Path, db_url: str) -> AsyncIterator[ControlPlaneServer]:
    settings = ControlPlaneSettings(home=tmp_path / "home", db_url=db_url, listen_addr="127.0.0.1:0")
    handle = await start_server(settings, services=[add_to_server])
    await asyncio.to_thread(ensure_entity, handle.registry)
    await asyncio.to_thread(create_view, handle.registry, feature_spec("stats"))
    yield handle
    await handle.stop()


def store_of(tmp_path: Path) -> OfflineStore:
    return OfflineStore(str(tmp_path / "home" / "offline"))


def scores(address: str) -> list[float | None]:
    """The training set of users 0 and 1 an hour after both files' rows."""
    with OfflineFeaturesClient(address) as client:
        table = client.historical_features(entity_rows({"user_id": [0, 1]}, [at(3600)] * 2), ["stats:score"])
    return list(table.table.column("stats:score").to_pylist())


def write_uncounted(server: ControlPlaneServer, store: OfflineStore) -> intents.Intent:
    """A later value of user 0 written as a batch chunk writes it: its intent committed first."""
    announced: list[intents.Intent] = []

    def announce(paths: Sequence[str]) -> None:
        announced.append(intents.announce(server.context.sessions, "batch-in-flight", "stats", 1, 0, paths))

    store.write("stats", 1, feature_rows({"user_id": [0]}, [at(600)], {"score": [99.0]}), announce=announce)
    return announced[0]


async def test_a_training_set_reads_no_row_of_a_chunk_not_yet_counted(
    server: ControlPlaneServer, tmp_path: Path
) -> None:
    store = store_of(tmp_path)
    store.write("stats", 1, feature_rows({"user_id": [0, 1]}, [at(0)] * 2, {"score": [1.0, 2.0]}))
    counted = await asyncio.to_thread(scores, server.address)
    assert counted == [1.0, 2.0]

    intent = await asyncio.to_thread(write_uncounted, server, store)
    assert len(store.files("stats", 1)) == 2  # the file is in place, its rows not counted
    assert await asyncio.to_thread(scores, server.address) == counted

    with write_session(server.context.sessions) as session:  # the chunk's counting transaction
        intents.settle_in(session, intent)
    assert await asyncio.to_thread(scores, server.address) == [99.0, 2.0]


async def test_a_training_set_answers_the_same_before_and_after_the_recovery(
    server: ControlPlaneServer, tmp_path: Path
) -> None:
    """A writer killed before its commit: the same request answers alike while its file waits for the
    recovery and once the recovery removed it."""
    store = store_of(tmp_path)
    store.write("stats", 1, feature_rows({"user_id": [0, 1]}, [at(0)] * 2, {"score": [1.0, 2.0]}))
    await asyncio.to_thread(write_uncounted, server, store)
    before = await asyncio.to_thread(scores, server.address)
    recovery = intents.recover(
        server.context.sessions, lambda paths: remove_data_files(store.filesystem, paths), lease_s=0.0
    )
    assert recovery.intents == 1
    assert await asyncio.to_thread(scores, server.address) == before == [1.0, 2.0]


async def test_a_training_set_is_unavailable_while_the_intents_cannot_be_read(
    server: ControlPlaneServer, tmp_path: Path
) -> None:
    """The database answers the registry but not the intents' read (a fake outage of that one query):
    the training set is refused as UNAVAILABLE rather than built from files that may not be counted."""
    store = store_of(tmp_path)
    store.write("stats", 1, feature_rows({"user_id": [0, 1]}, [at(0)] * 2, {"score": [1.0, 2.0]}))

    def down(state: ORMExecuteState) -> None:
        if "ingestion_intents" in str(state.statement):
            raise OperationalError("SELECT", None, ConnectionRefusedError("database down (fake)"))

    event.listen(server.context.sessions, "do_orm_execute", down)
    try:
        with pytest.raises(Unavailable, match="not counted yet"):
            await asyncio.to_thread(scores, server.address)
    finally:
        event.remove(server.context.sessions, "do_orm_execute", down)
    assert await asyncio.to_thread(scores, server.address) == [1.0, 2.0]


def test_files_lists_before_it_reads_the_intents(tmp_path: Path) -> None:
    """A writer announces and writes a file right after the reader's read of the open intents (the
    ``uncounted`` call, which does it itself once it has read them). Listed first, the file is not in the
    snapshot; had the intents been read before the listing, the file would be listed and named by no
    intent the reader read: its uncounted rows read."""
    root = str(tmp_path / "offline")
    writer = OfflineStore(root)
    writer.write("stats", 1, feature_rows({"user_id": [0]}, [at(0)], {"score": [1.0]}))
    (counted,) = writer.files("stats", 1)
    announced: list[str] = []

    def uncounted() -> frozenset[str]:
        read = frozenset(announced)  # the intents' read

        def announce(paths: Sequence[str]) -> None:
            announced.extend(paths)

        later = feature_rows({"user_id": [0]}, [at(60)], {"score": [2.0]})
        writer.write("stats", 1, later, announce=announce)  # announced and written just after it
        return read

    reader = OfflineStore(root, uncounted=uncounted)
    assert reader.files("stats", 1) == [counted]
    assert [batch.num_rows for batch in reader.scan("stats", 1)] == [1]  # the files of both calls left out
    assert len(writer.files("stats", 1)) == 3


async def test_a_training_set_overlapping_the_recovery_of_a_listed_file_answers_as_before(
    server: ControlPlaneServer, tmp_path: Path
) -> None:
    """A recovery pass removes the dead writer's file and deletes its intent between the reader's listing
    and its intents' read (run from a listener on that read: the race, made certain). The file is in the
    snapshot and named by no intent read, and gone: the training set answers as before, not INTERNAL."""
    store = store_of(tmp_path)
    store.write("stats", 1, feature_rows({"user_id": [0, 1]}, [at(0)] * 2, {"score": [1.0, 2.0]}))
    await asyncio.to_thread(write_uncounted, server, store)
    recovered: list[int] = []

    def recover_first(state: ORMExecuteState) -> None:
        if recovered or "ingestion_intents" not in str(state.statement):
            return
        recovered.append(0)  # before the recovery's own reads of the intents come through here
        recovery = intents.recover(
            server.context.sessions, lambda paths: remove_data_files(store.filesystem, paths), lease_s=0.0
        )
        recovered[0] = recovery.intents

    event.listen(server.context.sessions, "do_orm_execute", recover_first)
    try:
        assert await asyncio.to_thread(scores, server.address) == [1.0, 2.0]
    finally:
        event.remove(server.context.sessions, "do_orm_execute", recover_first)
    assert recovered == [1]
    assert len(store.files("stats", 1)) == 1


def test_a_listed_file_gone_uncounted_is_read_as_no_rows_by_a_reader_only(tmp_path: Path) -> None:
    """Between the listing and the intents' read, the uncounted file is removed and its intent deleted:
    a reader (``uncounted`` given) reads no rows of it; a writer's own store still says the file is gone."""
    root = str(tmp_path / "offline")
    writer = OfflineStore(root)
    writer.write("stats", 1, feature_rows({"user_id": [0]}, [at(0)], {"score": [1.0]}))
    writer.write("stats", 1, feature_rows({"user_id": [1]}, [at(0)], {"score": [2.0]}))
    counted, uncounted_file = writer.files("stats", 1)

    def uncounted() -> frozenset[str]:
        remove_data_files(writer.filesystem, [uncounted_file])  # the recovery, just before this read
        return frozenset()

    reader = OfflineStore(root, uncounted=uncounted)
    assert [batch.num_rows for batch in reader.scan("stats", 1)] == [1]
    assert writer.files("stats", 1) == [counted]
    with pytest.raises(OfflineStoreUnavailable, match=f"could not read {uncounted_file}: FileNotFoundError"):
        list(writer.read_file(uncounted_file))


def test_a_file_uri_root_and_its_plain_path_name_files_alike(tmp_path: Path) -> None:
    """The materializer given ``file://`` of a symlinked folder, the control plane its plain path (or the
    other way round): an intent names the writer's paths, so both must be the same strings, else the
    reader's filter and the recovery (which removes only the store's own data files) miss them."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    forms = [str(tmp_path / "link"), f"file://{tmp_path / 'link'}", f"file://{tmp_path}/./link/", str(real)]
    stores = [OfflineStore(form) for form in forms]
    assert {store.base_path for store in stores} == {str(real.resolve())}
    announced: list[str] = []
    stores[1].write(
        "stats", 1, feature_rows({"user_id": [0]}, [at(0)], {"score": [1.0]}), announce=announced.extend
    )
    reader = OfflineStore(forms[0], uncounted=lambda: frozenset(announced))
    assert reader.files("stats", 1) == []
    assert reader.is_data_file(announced[0], "stats", 1)
