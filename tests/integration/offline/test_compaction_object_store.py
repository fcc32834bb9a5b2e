"""Compaction of an offline store on an object store (the suite's S3 endpoint, tests/support/s3_server.py,
through pyarrow's real S3 client): a pass merges and later deletes as on a local root, an upload that
does not read back is removed unseen, and the partition locks kept by the metadata database (a PostgreSQL
advisory lock, or lock files beside a SQLite file) keep two control planes from merging one partition
at once. Then the control plane itself, with ``AETHER_OFFLINE_ROOT`` on S3, compacts through the RPC."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from clients.aether.v1 import types_pb2
from clients.errors import FailedPrecondition
from clients.sdk.offline import OfflineFeaturesClient
from control_plane.api.offline_features import add_to_server
from control_plane.db.engine import create_db_engine
from control_plane.offline import compaction
from control_plane.offline.compaction import CompactionPolicy, compact_view
from control_plane.offline.partition_locks import DatabaseLocks
from control_plane.offline.store import OfflineStore
from control_plane.server import start_server
from control_plane.settings import ControlPlaneSettings
from tests.support.faulty_fs import faulty
from tests.support.postgres_server import PostgresServer
from tests.support.s3_server import FakeS3Server
from tests.unit.offline.builders import (
    T0,
    create_view,
    ensure_entity,
    entity_rows,
    feature_rows,
    feature_spec,
)
from tests.unit.offline.test_compaction import (
    EAGER,
    LATER,
    NOW,
    VIEW,
    numbered,
    read_all,
    read_listed,
    write_files,
)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    created = create_db_engine(db_url)
    yield created
    created.dispose()


def data_keys(s3: FakeS3Server) -> list[str]:
    return sorted(key for key in s3.objects if key.endswith(".parquet"))


def test_a_pass_over_an_object_store_merges_then_deletes_after_the_grace(
    s3: FakeS3Server, tmp_path: Path
) -> None:
    store = OfflineStore(s3.uri("features"))
    locks = DatabaseLocks(create_db_engine(f"sqlite:///{tmp_path / 'aether.db'}"))
    write_files(store, numbered(6))
    before, listed, written = read_all(store), store.files(VIEW, 1), data_keys(s3)

    report = compact_view(store, VIEW, 1, EAGER, now=NOW, locks=locks)

    assert [len(run.files_in) for run in report.merged] == [6]
    assert report.merged[0].rows == before.num_rows
    assert [Path(p).name for p in store.files(VIEW, 1)] == [report.merged[0].file_out]
    assert read_all(store).equals(before, check_metadata=True)
    assert set(written) < set(data_keys(s3))  # sources kept (and skipped) until the grace is over
    assert compact_view(store, VIEW, 1, EAGER, now=LATER, locks=locks).deleted == 6
    assert len(data_keys(s3)) == 1
    assert read_all(store).equals(before, check_metadata=True)
    assert read_listed(store, listed).equals(before, check_metadata=True)  # a list taken before the merge
    assert not list(Path(tempfile.gettempdir()).glob("aether-compact-*"))


def test_an_object_store_pass_without_database_locks_is_refused(s3: FakeS3Server) -> None:
    store = OfflineStore(s3.uri("features"))
    write_files(store, numbered(3))
    with pytest.raises(FailedPrecondition, match="partition locks"):
        compact_view(store, VIEW, 1, EAGER, now=NOW)
    assert len(data_keys(s3)) == 3


def test_an_upload_that_does_not_read_back_as_written_is_removed(s3: FakeS3Server, tmp_path: Path) -> None:
    """The upload loses its last byte on the way (a FAKE fault) and completes anyway: the read-back
    refuses it and the staged object goes; it was never under a name readers list."""
    store = OfflineStore(s3.uri("features"))
    write_files(store, numbered(2))
    before = set(s3.objects)
    local = tmp_path / "merged.parquet"
    pq.write_table(read_all(store), local)
    filesystem, hooks = faulty(store.filesystem)
    hooks.wrap_output = lambda path, stream: _LosesLastByte(stream)
    partition = store.partition_path(VIEW, 1, T0.date())
    with pytest.raises(OSError, match="did not read back as written; it was removed"):
        compaction._stage(filesystem, str(local), partition)
    assert set(s3.objects) == before
    hooks.wrap_output = None
    staged = compaction._stage(filesystem, str(local), partition)
    assert Path(staged).name.startswith(".") and len(store.files(VIEW, 1)) == 2  # hidden from readers


class _LosesLastByte:
    def __init__(self, inner: pa.NativeFile) -> None:
        self._inner, self._held, self.closed = inner, b"", False

    def write(self, data: bytes) -> int:
        self._inner.write(self._held)
        self._held = bytes(data)
        return len(data)

    def close(self) -> None:
        self._inner.write(self._held[:-1])
        self._inner.close()
        self.closed = True

    def writable(self) -> bool:
        return True


def test_database_locks_exclude_a_second_control_plane_and_go_with_the_pass(db_url: str) -> None:
    """Two engines on one database stand for two control planes: a partition one holds is busy for the
    other, other partitions are not, and the lock is free again once the pass ends."""
    first_engine, second_engine = create_db_engine(db_url), create_db_engine(db_url)
    try:
        first, second = DatabaseLocks(first_engine), DatabaseLocks(second_engine)
        partition = "bucket/features/clicks/v1/date=2024-03-01"
        with first(partition) as held:
            assert held is not None
            held.confirm()
            with second(partition) as busy:
                assert busy is None
            with first(partition) as again:  # one control plane's loop and its RPC exclude each other too
                assert again is None
            with second("other/features/clicks/v1/date=2024-03-01") as other_bucket:
                assert other_bucket is not None
        with second(partition) as free:
            assert free is not None
    finally:
        first_engine.dispose()
        second_engine.dispose()


def end_lock_holder(other: Engine) -> None:
    """Ends, from another connection, the session holding the one advisory lock granted."""
    with other.connect() as connection:
        holder = connection.execute(
            text("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted")
        ).scalar_one()
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": holder})


def test_an_advisory_lock_whose_connection_died_is_not_confirmed(postgres_server: PostgresServer) -> None:
    """A PostgreSQL advisory lock goes with its session: once the connection is gone another pass may
    take the partition, so this pass must not publish or delete; confirm() fails before either."""
    url = postgres_server.fresh_url()
    engine, other = create_db_engine(url), create_db_engine(url)
    try:
        partition = "bucket/features/clicks/v1/date=2024-03-01"
        with DatabaseLocks(engine)(partition) as held:
            assert held is not None
            end_lock_holder(other)  # the lock holder's session ends (a failover, a restart)
            with pytest.raises(DBAPIError):
                held.confirm()
            with DatabaseLocks(other)(partition) as taken:
                assert taken is not None
    finally:
        engine.dispose()
        other.dispose()


def test_a_pass_that_lost_its_lock_leaves_the_staged_files_it_finds_alone(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """A staged merged file in a partition is another pass's only while that pass holds the partition:
    a pass whose lock went (its connection died) removed it all the same, failing that pass's copy."""
    url = postgres_server.fresh_url()
    engine, other = create_db_engine(url), create_db_engine(url)
    partition = tmp_path / "features" / "clicks" / "v1" / "date=2024-03-01"
    partition.mkdir(parents=True)
    staged = partition / ".compact-0123abcd.tmp"
    staged.write_bytes(b"the other pass's merged file, being checked")
    try:
        with DatabaseLocks(engine)(str(partition)) as held:
            assert held is not None
            end_lock_holder(other)
            with pytest.raises(DBAPIError):
                compaction._delete_replaced(
                    pafs.LocalFileSystem(), str(partition), CompactionPolicy(), dt.datetime.now(dt.UTC), held
                )
        assert staged.exists()
    finally:
        engine.dispose()
        other.dispose()


def test_a_pass_that_fails_after_its_lock_connection_died_reports_its_own_error(
    postgres_server: PostgresServer,
) -> None:
    """The release of the lock must not hide why the pass ended: with the connection gone unnoticed, the
    unlock raised OperationalError over the pass's own error."""
    url = postgres_server.fresh_url()
    engine, other = create_db_engine(url), create_db_engine(url)
    try:
        with pytest.raises(ValueError, match="the pass's own error"), DatabaseLocks(engine)("p/v1/d") as held:
            assert held is not None
            end_lock_holder(other)
            raise ValueError("the pass's own error")
        with DatabaseLocks(other)("p/v1/d") as taken:
            assert taken is not None
    finally:
        engine.dispose()
        other.dispose()


def test_a_pass_skips_the_partition_another_control_plane_holds_however_it_spells_the_root(
    s3: FakeS3Server, db_url: str
) -> None:
    """Two control planes on one bucket may write its URI differently (their own credentials, a trailing
    slash): the lock is the partition's, not the URI's, so the second still finds the partition busy."""
    mine = OfflineStore(s3.uri("features", access_key="plane-a"))
    theirs = OfflineStore(s3.uri("features/", access_key="plane-b"))
    write_files(mine, numbered(4))
    engines = create_db_engine(db_url), create_db_engine(db_url)
    try:
        my_locks, their_locks = (DatabaseLocks(engine) for engine in engines)
        with their_locks(theirs.partition_path(VIEW, 1, T0.date())) as held:
            assert held is not None
            report = compact_view(mine, VIEW, 1, EAGER, now=NOW, locks=my_locks)
        assert report.merged == [] and report.busy == [(1, T0.date())]
        assert len(compact_view(mine, VIEW, 1, EAGER, now=NOW, locks=my_locks).merged) == 1
    finally:
        for engine in engines:
            engine.dispose()


def test_stale_merged_files_left_before_their_upload_are_swept(tmp_path: Path) -> None:
    folder = compaction.upload_temp_folder()
    stale, fresh = (
        folder / f"aether-compact-{uuid.uuid4().hex}.tmp",
        folder / f"aether-compact-{uuid.uuid4().hex}.tmp",
    )
    for path in (stale, fresh):
        path.write_bytes(b"PAR1")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    try:
        assert compaction.sweep_stale_upload_temps() >= 1
        assert not stale.exists() and fresh.exists()
    finally:
        fresh.unlink(missing_ok=True)


async def test_the_control_plane_compacts_its_object_store_root(s3: FakeS3Server, tmp_path: Path) -> None:
    root = s3.uri("features")
    settings = ControlPlaneSettings(
        home=tmp_path / "home",
        db_url=f"sqlite:///{tmp_path / 'aether.db'}",
        listen_addr="127.0.0.1:0",
        offline_root=root,
        offline_compaction=CompactionPolicy(min_files=4, min_age_s=0, lateness_s=0, grace_s=0),
        offline_compact_interval_s=0,
    )
    server = await start_server(settings, services=[add_to_server])
    try:
        await asyncio.to_thread(ensure_entity, server.registry)
        await asyncio.to_thread(
            create_view, server.registry, feature_spec("stats", (("score", types_pb2.FLOAT64),))
        )
        store = OfflineStore(root)
        users = np.arange(20)
        for n in range(8):
            when = T0 + dt.timedelta(minutes=10 * (n % 3))
            store.write("stats", 1, feature_rows({"user_id": users}, [when] * 20, {"score": users * 1.0 + n}))
        labels: pa.Table = entity_rows({"user_id": users}, [T0 + dt.timedelta(hours=1)] * 20)

        def compact_and_hash() -> tuple[int, int, str, str]:
            with OfflineFeaturesClient(server.address) as client:
                before = client.historical_features(labels, ["stats:score"]).dataset_hash
                merged = client.compact("stats", 1)
                deleted = client.compact("stats", 1)  # grace 0: the next pass deletes the sources
                after = client.historical_features(labels, ["stats:score"]).dataset_hash
            return len(merged.merged[0].files_in), deleted.deleted_files, before, after

        files_in, deleted, before, after = await asyncio.to_thread(compact_and_hash)
        assert (files_in, deleted) == (8, 8)
        assert after == before
        assert len(data_keys(s3)) == 1
    finally:
        await server.stop()
