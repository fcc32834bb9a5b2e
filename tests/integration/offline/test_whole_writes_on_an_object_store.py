"""A training set's ``output_path`` copy, a dataset record and an ingested data file written to an object
store (the suite's S3 endpoint, tests/support/s3_server.py, through pyarrow's real S3 client) whose write
fails part-way.

pyarrow's S3 output stream completes its upload when it is closed, even after the writing raised: they
were written straight to their final key, so a write that failed part-way published its part over the
previous good copy ("Parquet magic bytes not found in footer"), and entity rows with a column Parquet
cannot hold left an empty object ("Parquet file size is 0 bytes") and answered INTERNAL. Now they are
written whole locally, uploaded under a hidden name, read back and copied (``offline.uploads``)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clients.errors import InvalidArgument, OfflineStoreUnavailable
from clients.sdk.auth import ChannelSecurity
from clients.sdk.offline import OfflineFeaturesClient
from control_plane.db.engine import create_db_engine
from control_plane.offline import datasets, uploads
from control_plane.offline.compaction import CompactionPolicy, compact_view
from control_plane.offline.datasets import (
    read_dataset_record,
    record_dataset,
    sweep_stale_copies,
    write_parquet,
)
from control_plane.offline.partition_locks import DatabaseLocks
from control_plane.offline.roots import open_filesystem
from control_plane.offline.store import OfflineStore
from tests.integration.offline.test_datasets_on_an_object_store import ADMIN, control_plane, rows
from tests.support.faulty_fs import CutOffStream, faulty
from tests.support.s3_server import FakeS3Server
from tests.unit.offline.builders import T0
from tests.unit.offline.test_compaction import NOW, VIEW, numbered, read_all, write_files

GOOD = pa.table({"x": list(range(1000))})


def union_rows() -> pa.Table:
    """Entity rows with a dense union column: Arrow holds it, Parquet cannot."""
    union = pa.UnionArray.from_dense(
        pa.array([0, 0, 0], pa.int8()), pa.array([0, 1, 2], pa.int32()), [pa.array([1, 2, 3])]
    )
    return rows().append_column("u", union)


@pytest.fixture
def upload_temps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The local folder where the test's uploads are written first (its own, so other processes' files
    do not count); after the test, none of them is left there."""
    folder = tmp_path / "uploads"
    folder.mkdir()
    monkeypatch.setattr(uploads, "upload_temp_folder", lambda: folder)
    yield folder
    left = sorted(path.name for path in folder.iterdir())
    assert not left, f"local upload temporaries left behind: {left}"


def copy_target(s3: FakeS3Server) -> str:
    return s3.uri("datasets/sets/train.parquet")


def keys_under(s3: FakeS3Server, prefix: str) -> list[str]:
    return sorted(key for key in s3.objects if key.startswith(prefix) and not key.endswith("/"))


def test_a_copy_whose_write_fails_part_way_leaves_the_good_one(s3: FakeS3Server, upload_temps: Path) -> None:
    target = copy_target(s3)
    write_parquet(GOOD, target)
    filesystem, path = open_filesystem(target)

    def write_then_fail(sink: pa.NativeFile) -> None:  # a write that fails part-way (disk, network, a type)
        sink.write(b"PAR1" + b"\0" * 100)
        raise OSError("connection reset while uploading")

    puts_before = len(s3.requests)
    with pytest.raises(OSError, match="connection reset"):
        datasets._write_atomically(filesystem, path, write_then_fail)
    # Readers see the old file or the whole new one, never a part; nothing was sent to the store.
    assert pq.read_table(path, filesystem=filesystem).equals(GOOD)
    assert keys_under(s3, "datasets/") == ["datasets/sets/train.parquet"]
    assert [r for r in s3.requests[puts_before:] if r[0] in ("PUT", "POST")] == []


def test_a_copy_whose_upload_is_cut_off_leaves_the_good_one(s3: FakeS3Server, upload_temps: Path) -> None:
    """The upload itself breaks part-way (a FAKE fault), and pyarrow's closing stream completes it: what
    it published is under a hidden name, which is removed; the final key keeps the good copy."""
    target = copy_target(s3)
    write_parquet(GOOD, target)
    real, path = open_filesystem(target)
    filesystem, hooks = faulty(real)
    hooks.wrap_output = lambda _path, stream: CutOffStream(stream)
    with pytest.raises(OSError, match="cut off part-way"):
        datasets._write_atomically(filesystem, path, lambda sink: pq.write_table(pa.table({"x": [1]}), sink))
    assert pq.read_table(path, filesystem=real).equals(GOOD)
    assert keys_under(s3, "datasets/") == ["datasets/sets/train.parquet"]
    hooks.wrap_output = None
    datasets._write_atomically(filesystem, path, lambda sink: pq.write_table(pa.table({"x": [1]}), sink))
    assert pq.read_table(path, filesystem=real).to_pydict() == {"x": [1]}  # and a whole one replaces it
    assert keys_under(s3, "datasets/") == ["datasets/sets/train.parquet"]


def test_a_copy_parquet_cannot_hold_is_refused_naming_the_column(
    s3: FakeS3Server, upload_temps: Path
) -> None:
    """The realistic trigger: a union column. ``pq.write_table`` raised once the object store's output
    stream was open, which then published an empty object over the good copy."""
    target = copy_target(s3)
    write_parquet(GOOD, target)
    filesystem, path = open_filesystem(target)
    with pytest.raises(InvalidArgument, match=r"column 'u' is of type dense_union<0: int64=0>"):
        write_parquet(union_rows(), target)
    assert pq.read_table(path, filesystem=filesystem).equals(GOOD)
    assert keys_under(s3, "datasets/") == ["datasets/sets/train.parquet"]


def test_a_record_whose_upload_is_cut_off_keeps_the_previous_record(
    s3: FakeS3Server, upload_temps: Path
) -> None:
    store = OfflineStore(s3.uri("offline"))
    dataset_hash = hashlib.sha256(b"a dataset").hexdigest()
    record_dataset(store, dataset_hash, {"rows": 3, "output_path": "s3://aether/datasets/first.parquet"})
    first = read_dataset_record(store, dataset_hash)
    real = store.filesystem
    store.filesystem, hooks = faulty(real)
    hooks.wrap_output = lambda _path, stream: CutOffStream(stream)
    with pytest.raises(OfflineStoreUnavailable, match="cut off part-way"):
        record_dataset(store, dataset_hash, {"rows": 3, "output_path": "s3://aether/datasets/second.parquet"})
    store.filesystem = real
    assert read_dataset_record(store, dataset_hash) == first  # whole, and as it was
    assert keys_under(s3, "offline/_datasets/") == [f"offline/_datasets/{dataset_hash}.json"]
    json.loads(s3.objects[f"offline/_datasets/{dataset_hash}.json"])


async def test_entity_rows_parquet_cannot_hold_are_invalid_argument_and_keep_the_copy(
    s3: FakeS3Server, tmp_path: Path, db_url: str, upload_temps: Path
) -> None:
    """Through the RPC: entity rows with a union column and an ``output_path`` on the object store were
    INTERNAL, after the join, and left an empty object over the good copy. Now INVALID_ARGUMENT naming the
    column, before the join, and the copy is as it was."""
    handle = await control_plane(s3.uri("datasets"), tmp_path / "home", db_url)
    try:
        with OfflineFeaturesClient(handle.address, security=ChannelSecurity(token=ADMIN)) as admin:
            await asyncio.to_thread(
                admin.historical_features, rows(), ["stats"], output_path="sets/train.parquet"
            )
            good = s3.objects["datasets/sets/train.parquet"]
            with pytest.raises(InvalidArgument, match=r"column 'u' is of type dense_union") as refused:
                await asyncio.to_thread(
                    admin.historical_features, union_rows(), ["stats"], output_path="sets/train.parquet"
                )
            assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await handle.stop()
    assert s3.objects["datasets/sets/train.parquet"] == good
    assert pq.read_table(pa.BufferReader(good)).num_rows == 3
    assert keys_under(s3, "datasets/") == ["datasets/sets/train.parquet"]


def test_staged_objects_a_crash_left_are_swept(s3: FakeS3Server) -> None:
    """A writer killed between its upload and its copy leaves a hidden staged object: the datasets root's
    sweep removes a copy's, the offline store's a record's, once past the age rule (the fake endpoint
    dates every object 2024); a caller's own hidden file and the good objects stay."""
    dataset_hash = hashlib.sha256(b"a dataset").hexdigest()
    stale_copy = f"datasets/sets/.train.parquet.{uuid.uuid4().hex}.tmp"
    stale_record = f"offline/_datasets/.{dataset_hash}.json.{uuid.uuid4().hex}.tmp"
    kept = [
        "datasets/sets/train.parquet",
        "datasets/.notes.tmp",  # a caller's own
        f"offline/_datasets/{dataset_hash}.json",
    ]
    for key in [stale_copy, stale_record, *kept]:
        s3.objects[key] = b"PAR1 half a file"
    assert sweep_stale_copies(s3.uri("datasets")) == 1
    assert OfflineStore(s3.uri("offline")).sweep_stale_temps() == 1
    assert keys_under(s3, "") == sorted(kept)
    # One younger than the age rule may be a live writer's: kept.
    s3.objects[stale_record] = b"{"
    assert OfflineStore(s3.uri("offline")).sweep_stale_temps(older_than_s=100 * 365 * 86400) == 0
    assert stale_record in s3.objects


def test_a_data_file_whose_upload_is_cut_off_is_never_listed(
    s3: FakeS3Server, tmp_path: Path, upload_temps: Path
) -> None:
    """An ingested file's upload breaks part-way: it was published under its data file's name, which
    every listing of the partition then read (and failed on) wherever no open intent hid it. Now the write
    fails with nothing listed, and the files written before read back whole."""
    store = OfflineStore(s3.uri("features"))
    first = numbered(1)[0]
    write_files(store, [first])
    real = store.filesystem
    store.filesystem, hooks = faulty(real)
    hooks.wrap_output = lambda _path, stream: CutOffStream(stream)
    with pytest.raises(OfflineStoreUnavailable, match="cut off part-way"):
        store.write(VIEW, 1, numbered(1, first=1)[0])
    store.filesystem = real
    assert len(store.files(VIEW, 1)) == 1
    assert read_all(store).equals(first)
    partition = store.partition_path(VIEW, 1, T0.date())
    only = Path(store.files(VIEW, 1)[0]).name
    assert [Path(key).name for key in keys_under(s3, partition.split("/", 1)[1])] == [only]  # none hidden


def test_a_pass_removes_a_data_files_staged_upload_a_crash_left(s3: FakeS3Server, tmp_path: Path) -> None:
    """A writer killed between its upload and its copy leaves a hidden staged object in the partition, named
    by no intent: the partition's next pass removes it once past the age rule (the fake endpoint dates
    every object 2024), and touches nothing else."""
    store = OfflineStore(s3.uri("features"))
    write_files(store, numbered(2))
    partition = store.partition_path(VIEW, 1, T0.date()).split("/", 1)[1]
    stale = f"{partition}/.{uuid.uuid4().hex}.tmp"
    s3.objects[stale] = b"PAR1 half a file"
    before = [key for key in keys_under(s3, partition) if key != stale]
    locks = DatabaseLocks(create_db_engine(f"sqlite:///{tmp_path / 'aether.db'}"))
    idle = CompactionPolicy(min_files=100)  # nothing to merge: only the partition's clean-up
    compact_view(store, VIEW, 1, idle, now=NOW, locks=locks)
    assert keys_under(s3, partition) == before


def test_stale_local_upload_temporaries_are_swept() -> None:
    folder = uploads.upload_temp_folder()
    stale, fresh = (
        folder / f"{uploads.UPLOAD_TEMP_PREFIX}{uuid.uuid4().hex}.tmp",
        folder / f"{uploads.UPLOAD_TEMP_PREFIX}{uuid.uuid4().hex}.tmp",
    )
    for path in (stale, fresh):
        path.write_bytes(b"PAR1")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    try:
        assert uploads.sweep_stale_upload_temps() >= 1
        assert not stale.exists() and fresh.exists()
    finally:
        fresh.unlink(missing_ok=True)
