"""A data file whose footer decodes but whose page bytes do not: compaction read its rows outside any
decoding boundary, so pyarrow's ArrowInvalid came out of the pass as it was, INTERNAL from the
CompactOfflineStore RPC and a traceback at every background pass. Now the store's FAILED_PRECONDITION
naming the file, as a reader of the same file answers; the pass leaves the file's partition as it is,
reports it and goes on with the others, and the background pass logs one line a pass saying what to do.
Real files in a scratch folder, damaged by exact bytes so the error is certain."""

from __future__ import annotations

import datetime as dt
import logging
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clients.errors import OfflineFileUndecodable
from control_plane.offline.compaction import compact_view
from control_plane.offline.compaction_loop import CompactionLoop
from control_plane.offline.store import OfflineStore
from tests.unit.offline.test_damaged_files import EAGER, VIEW, later, rows

#: What pyarrow answers for the damaged page (:func:`damage_pages`): the page's Snappy payload says it
#: holds more bytes than its page header does.
DAMAGED_PAGE = r"ArrowInvalid: Output buffer size \(1600\) must be 16383 or larger"


def damage_pages(path: Path) -> None:
    """The data file at ``path`` written again with its rows and schema as they were, ``user_id``'s values
    in one Snappy page of their own (no dictionary, a v2 page, whose levels are outside the compressed
    bytes), and that payload's length preamble (1600, two varint bytes) raised to 16383: the footer
    decodes, the page does not."""
    table = pq.read_table(path)
    pq.write_table(table, path, compression="snappy", use_dictionary=False, data_page_version="2.0")
    values = table.column("user_id").combine_chunks().buffers()[1]
    assert values is not None and values.size == 1600
    payload = pa.compress(values, "snappy", asbytes=True)
    data = path.read_bytes()
    assert data.count(payload) == 1 and payload.startswith(b"\xc0\x0c")
    at = data.index(payload)
    path.write_bytes(data[:at] + b"\xff\x7f" + data[at + 2 :])
    assert pq.ParquetFile(path).metadata.num_rows == 200  # the footer still decodes


def damaged_neighbour(store: OfflineStore) -> Path:
    """Three files of one day, the middle one's pages damaged (:func:`damage_pages`); its path."""
    written = [store.write(VIEW, 1, rows(first, 200))[0] for first in (0, 200, 400)]
    damaged = Path(written[1])
    damage_pages(damaged)
    return damaged


def test_compacting_a_data_file_whose_pages_do_not_decode_skips_its_partition_naming_it(
    store: OfflineStore,
) -> None:
    damaged = damaged_neighbour(store)
    before = store.files(VIEW, 1)
    named = rf"could not read {damaged}: {DAMAGED_PAGE}"
    with pytest.raises(OfflineFileUndecodable, match=named):  # a reader of the file answers the same
        list(store.read_file(str(damaged)))
    report = compact_view(store, VIEW, 1, EAGER, now=later())
    ((version, day, reason),) = report.skipped
    assert (version, day) == (1, store.dates(VIEW, 1)[0]) and re.search(named, reason)
    assert not report.merged
    assert store.files(VIEW, 1) == before and damaged.exists()  # nothing merged, nothing deleted
    assert not [p for p in damaged.parent.iterdir() if p.name.endswith(".tmp")]  # no temporary file left


def test_the_background_pass_logs_one_line_naming_the_damaged_file_and_compacts_other_views(
    store: OfflineStore, caplog: pytest.LogCaptureFixture
) -> None:
    damaged = damaged_neighbour(store)
    for first in (0, 10, 20):
        store.write("other", 1, rows(first))
    loop = CompactionLoop(store, EAGER, 60.0)
    with caplog.at_level(logging.INFO, logger="aether.offline.compaction"):
        reports = loop.run_once(now=later())
    assert reports[VIEW].skipped and reports["other"].merged  # the other view goes on
    (failed,) = [r for r in caplog.records if VIEW in r.getMessage() and r.levelno >= logging.WARNING]
    assert str(damaged) in failed.getMessage() and "Output buffer size" in failed.getMessage()
    assert failed.exc_info is None  # one line, no traceback: the file's fault, not the server's
    assert damaged.exists()


def next_day(table: pa.Table) -> pa.Table:
    """``table``'s rows a day later (its partition the next day's)."""
    moved = [t + dt.timedelta(days=1) for t in table.column("event_ts").to_pylist()]
    return table.set_column(1, "event_ts", pa.array(moved, pa.timestamp("us", tz="UTC")))


def test_a_damaged_file_leaves_its_partition_as_it_is_and_the_other_days_are_compacted(
    store: OfflineStore, caplog: pytest.LogCaptureFixture
) -> None:
    """It stopped the whole view's pass, every pass: the healthy day after it was never compacted, and
    the log said "retrying next pass" for a file that will never decode."""
    damaged = damaged_neighbour(store)
    day1, day2 = store.dates(VIEW, 1)[0], store.dates(VIEW, 1)[0] + dt.timedelta(days=1)
    healthy = [Path(store.write(VIEW, 1, next_day(rows(first)))[0]).name for first in (0, 10, 20)]
    assert store.dates(VIEW, 1) == [day1, day2]
    day1_files = sorted(p.name for p in damaged.parent.iterdir() if p.name.endswith(".parquet"))
    report = compact_view(store, VIEW, 1, EAGER, now=later())
    assert [(run.day, run.files_in) for run in report.merged] == [(day2, tuple(sorted(healthy)))]
    ((version, day, reason),) = report.skipped
    assert (version, day) == (1, day1) and str(damaged) in reason and "Output buffer size" in reason
    assert sorted(p.name for p in damaged.parent.iterdir() if p.name.endswith(".parquet")) == day1_files
    assert not [p for p in damaged.parent.iterdir() if p.name.endswith(".tmp")]  # nothing published
    # The background pass: the view's report, and one warning naming the file and what to do.
    loop = CompactionLoop(store, EAGER, 60.0)
    with caplog.at_level(logging.INFO, logger="aether.offline.compaction"):
        reports = loop.run_once(now=later())
    assert [(1, day1)] == [(v, d) for v, d, _ in reports[VIEW].skipped]
    (warned,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    message = warned.getMessage()
    assert str(damaged) in message and "v1/date=2026-01-01" in message and warned.exc_info is None
    assert "move the damaged file aside or restore it from a backup" in message and "retrying" not in message
