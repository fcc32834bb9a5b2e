"""Stored files whose bytes pyarrow parses and Aether, or pyarrow's own name decoding, cannot: a merged
file's footer record that is not the JSON compaction wrote, a data file whose column names are not
UTF-8. Each was INTERNAL (a JSONDecodeError, UnicodeDecodeError or KeyError out of every listing of the
partition: the point-in-time join, compaction, the retraining data window, which then failed each tick
with no decision and no alert); now the store's FAILED_PRECONDITION naming the file (compaction leaves
the file's partition as it is and reports it there). Real files in a
scratch folder, damaged by exact bytes so the error is certain."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clients.errors import OfflineStoreMisconfigured
from control_plane.offline.compaction import CompactionPolicy, compact_view
from control_plane.offline.merged import REPLACED_KEY, is_merged_name
from control_plane.offline.store import OfflineStore

VIEW = "clicks"
DAY = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
EAGER = CompactionPolicy(min_files=1, min_age_s=0, lateness_s=0, grace_s=3600)
#: A column name with non-ASCII characters, and the same number of bytes that are not UTF-8.
NAMED, GARBLED = "score_éé", b"score_\xff\xfe\xff\xfe"


def rows(first: int, count: int = 5) -> pa.Table:
    moment = [DAY + dt.timedelta(minutes=first + i) for i in range(count)]
    return pa.table(
        {
            "user_id": pa.array(range(first, first + count), pa.int64()),
            "event_ts": pa.array(moment, pa.timestamp("us", tz="UTC")),
            "ingested_ts": pa.array(moment, pa.timestamp("us", tz="UTC")),
            NAMED: pa.array([1.0] * count),
        }
    )


def later() -> dt.datetime:
    """A pass "now" after the files were written (the policy merges files older than it)."""
    return dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)


def merged_file(store: OfflineStore) -> Path:
    """Three files of one day merged by a real compaction pass; the merged file's path."""
    for first in (0, 10, 20):
        store.write(VIEW, 1, rows(first))
    compact_view(store, VIEW, 1, EAGER, now=later())
    (merged,) = [Path(p) for p in store.files(VIEW, 1) if is_merged_name(Path(p).name)]
    return merged


def rewrite_record(path: Path, record: bytes) -> None:
    """The merged file at ``path`` written again, as compaction writes it, with ``record`` as its footer
    record and its rows as they were: a whole Parquet file whose record is not the one compaction wrote."""
    parquet = pq.ParquetFile(path)
    assert REPLACED_KEY in (parquet.metadata.metadata or {})
    table = parquet.read()
    parquet.close()
    with pq.ParquetWriter(path, table.schema) as writer:
        writer.write_table(table)
        writer.add_key_value_metadata({REPLACED_KEY: record})


def garble_names(path: Path) -> None:
    """``NAMED``'s UTF-8 bytes replaced, wherever the footer holds them, by as many that are not UTF-8
    (the footer's lengths stay right, so it parses; the Arrow schema in it is base64, so not touched)."""
    data = path.read_bytes()
    named = NAMED.encode()
    assert named in data and len(named) == len(GARBLED)
    path.write_bytes(data.replace(named, GARBLED))


@pytest.mark.parametrize(
    "record",
    [
        b'{"format":1,"compacted_at_us":\xff\xfe}',  # not UTF-8: UnicodeDecodeError
        b'{"format":1,"compacted_at_us":17',  # cut short: JSONDecodeError
        b'{"format":1,"compacted_at":17,"sources":[]}',  # a key changed: KeyError
        b'{"format":1,"compacted_at_us":17,"sources":[["a.parquet"]]}',  # a source without its rows
        b"[1]",  # not an object: TypeError
    ],
)
def test_a_merged_file_whose_record_does_not_decode_is_failed_precondition_naming_it(
    store: OfflineStore, record: bytes
) -> None:
    merged = merged_file(store)
    rewrite_record(merged, record)
    damaged = (
        rf"could not list .*: UndecodableFile: the record of the files the merged file {merged} replaced"
    )
    with pytest.raises(OfflineStoreMisconfigured, match=damaged):
        store.files(VIEW, 1)
    with pytest.raises(OfflineStoreMisconfigured, match=merged.name):
        list(store.scan(VIEW, 1))
    # Compaction lists the partition too (and reads the records of the files it would delete): it
    # leaves the partition as it is and reports it.
    ((_, day, reason),) = compact_view(store, VIEW, 1, EAGER, now=later()).skipped
    assert day == DAY.date() and merged.name in reason


def test_a_data_file_whose_column_names_are_not_utf8_is_failed_precondition_naming_it(
    store: OfflineStore,
) -> None:
    (written,) = store.write(VIEW, 1, rows(0))
    garble_names(Path(written))
    with pytest.raises(OfflineStoreMisconfigured, match=rf"could not read {written}: UnicodeDecodeError"):
        list(store.read_file(written))
    with (
        pytest.raises(OfflineStoreMisconfigured, match=rf"could not read {written}: UnicodeDecodeError"),
        store.open_rows(written) as opened,
    ):
        list(opened.batches(None, 100, False))


def test_a_merged_file_whose_column_names_are_not_utf8_is_failed_precondition_naming_it(
    store: OfflineStore,
) -> None:
    """Listing reads a merged file's footer (its record), so the listing fails, naming the file."""
    merged = merged_file(store)
    garble_names(merged)
    damaged = (
        rf"could not list .*: UndecodableFile: the footer of {merged} does not decode: UnicodeDecodeError"
    )
    with pytest.raises(OfflineStoreMisconfigured, match=damaged):
        store.files(VIEW, 1)


def test_compacting_a_data_file_whose_column_names_are_not_utf8_skips_its_partition_naming_it(
    store: OfflineStore,
) -> None:
    (damaged,) = store.write(VIEW, 1, rows(0))
    store.write(VIEW, 1, rows(10))
    garble_names(Path(damaged))
    damaged_footer = rf"UndecodableFile: the footer of {damaged} does not decode: UnicodeDecodeError"
    for dry_run in (True, False):
        report = compact_view(store, VIEW, 1, EAGER, now=later(), dry_run=dry_run)
        ((_, day, reason),) = report.skipped
        assert day == DAY.date() and re.search(damaged_footer, reason) and not report.merged
