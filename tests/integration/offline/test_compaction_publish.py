"""What readers of an object-store partition see while a compaction pass publishes its merged file, when
a step of the publish fails (a read-back that fails once, an upload cut off part-way, a delete refused:
FAKE faults, ``tests/support/faulty_fs.py``, around pyarrow's real S3 client and the suite's S3
endpoint) and when a file lands in the partition during the pass. Every reader, whenever it listed the
partition, reads each row exactly once."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from control_plane.db.engine import create_db_engine
from control_plane.offline.compaction import compact_view
from control_plane.offline.partition_locks import DatabaseLocks
from control_plane.offline.store import OfflineStore
from tests.support.faulty_fs import CutOffStream, faulty
from tests.support.s3_server import FakeS3Server
from tests.unit.offline.builders import T0
from tests.unit.offline.test_compaction import (
    EAGER,
    LATER,
    NOW,
    VIEW,
    numbered,
    read_all,
    read_listed,
    rows,
    write_files,
)


@pytest.fixture
def locks(tmp_path: Path) -> Iterator[DatabaseLocks]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'aether.db'}")
    yield DatabaseLocks(engine)
    engine.dispose()


def keys(s3: FakeS3Server) -> set[str]:
    return set(s3.objects)


def base(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def sorted_rows(table: pa.Table) -> list[dict[str, object]]:
    return sorted(table.to_pylist(), key=lambda row: (row["score"], row["user_id"]))


def test_a_read_back_that_fails_once_never_takes_away_a_file_a_reader_listed(
    s3: FakeS3Server, locks: DatabaseLocks
) -> None:
    """The pass reads its upload's footer back, and that read fails once (a dropped connection). The
    merged object was visible since its upload completed, and the pass deleted it: a reader that listed
    the partition meanwhile (a join between its passes, a training set recording the names it read)
    had the merged file's name, and its sources left out, and then found nothing under that name."""
    store = OfflineStore(s3.uri("features"))
    write_files(store, numbered(6))
    before, sources = read_all(store), keys(s3)
    store.filesystem, hooks = faulty(store.filesystem)
    listings: list[list[str]] = []
    failed: list[str] = []

    def fail_first_read_of_the_upload(path: str) -> None:
        if failed or path.split("/", 1)[1] in sources:
            return
        failed.append(path)
        listings.append(store.files(VIEW, 1))  # a reader lists the partition at that moment
        raise OSError("FAKE fault: connection reset while reading the footer back")

    hooks.before_open_input = fail_first_read_of_the_upload
    with contextlib.suppress(OSError):
        compact_view(store, VIEW, 1, EAGER, now=NOW, locks=locks)
    hooks.before_open_input = None

    assert listings, "the pass never read its upload back"
    assert read_listed(store, listings[0]).equals(before, check_metadata=True)
    assert read_all(store).equals(before, check_metadata=True)
    compact_view(store, VIEW, 1, EAGER, now=NOW, locks=locks)
    (merged,) = store.files(VIEW, 1)
    assert read_all(store).equals(before, check_metadata=True)
    assert keys(s3) == sources | {merged.split("/", 1)[1]}  # nothing else left behind


def test_an_upload_cut_off_part_way_is_never_read_and_never_left_in_the_partition(
    s3: FakeS3Server, locks: DatabaseLocks
) -> None:
    """The upload is cut off part-way, and pyarrow's S3 stream, closed on the way out, completes the
    upload with what it was given: a torn Parquet object. Readers list every ``.parquet`` object of the
    partition, so one listing then failed on it; and when the pass's delete of it failed too (refused
    once), it stayed, and every listing of the partition, every join and every later pass failed."""
    store = OfflineStore(s3.uri("features"))
    write_files(store, numbered(6))
    before, sources = read_all(store), keys(s3)
    store.filesystem, hooks = faulty(store.filesystem)
    seen: list[pa.Table | BaseException] = []
    refused: list[str] = []

    def read_now() -> None:
        try:
            seen.append(read_all(store))
        except Exception as exc:
            seen.append(exc)

    def cut_off(path: str, stream: pa.NativeFile) -> object:
        return CutOffStream(stream, after_close=read_now)

    def refuse_first_delete(path: str) -> None:
        if not refused:
            refused.append(path)
            raise OSError("FAKE fault: the delete was refused (throttled)")

    hooks.wrap_output, hooks.before_delete = cut_off, refuse_first_delete
    with pytest.raises(OSError, match="cut off part-way"):
        compact_view(store, VIEW, 1, EAGER, now=NOW, locks=locks)
    hooks.wrap_output = hooks.before_delete = None

    assert seen, "the upload's stream was never closed"
    assert not isinstance(seen[0], BaseException), seen[0]  # a reader right after the close
    assert seen[0].equals(before, check_metadata=True)
    assert read_all(store).equals(before, check_metadata=True)  # and after the pass
    compact_view(store, VIEW, 1, EAGER, now=NOW, locks=locks)  # the next pass merges, and tidies up
    (merged,) = store.files(VIEW, 1)
    assert read_all(store).equals(before, check_metadata=True)
    assert keys(s3) == sources | {merged.split("/", 1)[1]}


def test_files_that_land_during_a_pass_are_left_alone_and_read_once(
    s3: FakeS3Server, locks: DatabaseLocks
) -> None:
    """Two files land in the partition while the pass merges it, after its listing: one newer than every
    file there, one named inside the merged run (a writer whose clock lags). Neither is merged nor
    deleted by this pass or the next; each row is read once throughout, and a later pass merges them."""
    store = OfflineStore(s3.uri("features"))
    write_files(store, numbered(6))
    before = read_all(store)
    names = sorted(base(p) for p in store.files(VIEW, 1))
    partition = store.partition_path(VIEW, 1, T0.date())
    inside = f"{uuid.UUID(int=uuid.UUID(names[2][:36]).int + 1)}.parquet"
    assert names[2] < inside < names[3]
    late = [rows([(7, 30, 5, 1000.0)]), rows([(8, 40, 6, 2000.0), (9, 40, 6, 3000.0)])]
    plain = OfflineStore(s3.uri("features"))
    store.filesystem, hooks = faulty(store.filesystem)

    def land_late_files(path: str) -> None:
        if hooks.before_open_input is None:
            return
        hooks.before_open_input = None  # once, after the pass listed the partition
        plain.write(VIEW, 1, late[0])
        pq.write_table(late[1], f"{partition}/{inside}", filesystem=plain.filesystem)

    hooks.before_open_input = land_late_files
    report = compact_view(store, VIEW, 1, EAGER, now=NOW, locks=locks)
    assert [run.files_in for run in report.merged] == [tuple(names)]

    everything = sorted_rows(pa.concat_tables([before, *late]))
    assert sorted_rows(read_all(store)) == everything
    assert inside in {base(p) for p in store.files(VIEW, 1)}
    again = compact_view(store, VIEW, 1, EAGER, now=LATER, locks=locks)
    assert again.deleted == 6  # the sources only: the late files are merged now, and kept for the grace
    assert sum(run.rows for run in again.merged) == len(everything)
    assert len(store.files(VIEW, 1)) == 1
    assert sorted_rows(read_all(store)) == everything
