"""The offline store: feature rows as Parquet files, partitioned by view / version / event date.

Layout, under a root that is a local folder or any ``pyarrow.fs`` URI (``file:///…``, ``s3://…``)::

    <root>/<view>/v<version>/date=YYYY-MM-DD/<uuid>.parquet

Every file holds the entity join-key columns, ``event_ts`` and ``ingested_ts`` (``timestamp[us, tz=UTC]``)
and one column per feature. A file is written whole or not at all, and readers never list a partial one
(:mod:`control_plane.offline.data_file_writes`).

File names are time-ordered UUIDs (the UUIDv7 layout: milliseconds first), so listing a partition in name
order lists files in write order. Every file of a write is named before any is written, and ``write``
hands the names to its caller's ``announce`` first: ingestion commits them as an intent there
(``control_plane.ingestion.intents``), so a writer killed before its rows are counted leaves files that
a recovery finds and removes. A store given ``uncounted`` (the control plane's readers) leaves the files
an open intent names out of :meth:`OfflineStore.files` (and so ``scan``): rows no run counted yet are
never read, so a request answers the same before and after the recovery. A file listed while its intent
was open and removed (its intent deleted) before the intents' read is not named, and is gone: such a
store's ``read_file`` gives it no rows, since only compaction (whose merged file holds the rows, found by
``locate``) and the removal of uncounted files delete a data file. Readers rely on name order for
determinism: the as-of join breaks exact ties (same event and ingestion time) by row position, and a
later write then wins.

Compaction (:mod:`control_plane.offline.compaction`) merges a partition's many small files into one
whose footer names the files it replaced (:mod:`control_plane.offline.merged`). Listing leaves those
out, reading only the merged files' footers, so each row is read once; a replaced file is deleted an
hour later, and a reader that opens it after that (it listed it before, or a lineage record names it)
gets its rows from the merged file (:meth:`OfflineStore.open_rows`).

Where the files lie and what the store lists (views, versions, dates, files) is
:class:`~control_plane.offline.store_layout.StoreLayout`, which ``OfflineStore`` extends with writing and
reading; one file's whole write is :mod:`control_plane.offline.data_file_writes`, and the sweep of the
hidden temporary files that killed writers leave :mod:`control_plane.offline.stale_temps`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import ExitStack, contextmanager

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clients.errors import InvalidArgument
from clients.time_bounds import EARLIEST_TIME_US, LATEST_TIME_US
from control_plane.offline.data_file_writes import time_ordered_uuid, write_whole_file
from control_plane.offline.merged import locate
from control_plane.offline.stale_temps import sweep_stale_objects, sweep_stale_temps
from control_plane.offline.store_errors import store_errors
from control_plane.offline.store_layout import PARQUET_SUFFIX, StoreLayout, check_name, utc
from control_plane.offline.stored_rows import StoredRows

# Re-exported: readers import them from the store, as before the split.
from control_plane.offline.timestamps import TIMESTAMP_TYPE as TIMESTAMP_TYPE
from control_plane.offline.timestamps import normalize_timestamps as normalize_timestamps
from control_plane.offline.uploads import STALE_TEMP_AGE_S as STALE_TEMP_AGE_S

EVENT_TS = "event_ts"
INGESTED_TS = "ingested_ts"
#: Where dataset records lie under the root (``datasets``). A leading underscore: view names may not start
#: with one, so no view folder can collide with it.
DATASETS_DIR = "_datasets"
#: The event times a date partition can name (``date=YYYY-MM-DD``: years 1 to 9999, those of a Python
#: date), as microseconds since 1970 in UTC. Ingestion quarantines a record outside them (validation).
EARLIEST_EVENT_US = EARLIEST_TIME_US  # 0001-01-01T00:00:00Z
LATEST_EVENT_US = LATEST_TIME_US  # 9999-12-31T23:59:59.999999Z

_log = logging.getLogger("aether.offline.store")


class OfflineStore(StoreLayout):
    """Append-only Parquet storage of feature rows. Safe for concurrent writers (every file has a unique
    name) and for readers running alongside writers (they never see a partial file)."""

    # -- writing ---------------------------------------------------------------------------------------

    def write(
        self,
        view: str,
        version: int,
        table: pa.Table,
        announce: Callable[[Sequence[str]], None] | None = None,
    ) -> list[str]:
        """Appends ``table`` (join keys, ``event_ts``, ``ingested_ts``, features) to the view version,
        one new file per event date. Timestamps must carry a time zone; they are stored as µs UTC (the
        digits of a nanosecond time below a microsecond are dropped, as ingestion drops them). An event
        time no partition can name (before year 1 or after year 9999) refuses the table, before any file
        is written. A write that fails part-way (a later date's file) removes the files it wrote first
        (best effort, logged), so a failed write leaves no file: left, readers saw rows of a write that
        failed, which no ingestion run counts.
        ``announce``, when given, is called with every path the write will create, before any file is
        written (an exception from it stops the write with nothing written): ingestion commits them in
        an intent there, so a writer killed before counting its rows leaves files a recovery can find
        (``control_plane.ingestion.intents``).
        Returns the written file paths (filesystem paths, without the URI scheme)."""
        check_name(view)
        if version < 1:
            raise InvalidArgument(f"version must be >= 1, got {version}")
        table = normalize_timestamps(table, (EVENT_TS, INGESTED_TS))
        if table.num_rows == 0:
            return []
        if table.column(EVENT_TS).null_count or table.column(INGESTED_TS).null_count:
            raise InvalidArgument(f"{EVENT_TS} and {INGESTED_TS} must not be null")
        _check_partitionable(table.column(EVENT_TS))
        dates = pc.floor_temporal(table.column(EVENT_TS), unit="day")
        # Every file is named before any is written (time-ordered names, in write order).
        planned = [
            (day, self._partition_dir(view, version, day.date()), time_ordered_uuid())
            for day in pc.unique(dates).to_pylist()
        ]
        if announce is not None:
            announce([f"{partition}/{name}{PARQUET_SUFFIX}" for _day, partition, name in planned])
        written: list[str] = []
        try:
            with store_errors(self.root, f"write rows of feature view {view!r} version {version}"):
                for day, partition, name in planned:
                    rows = table.filter(pc.equal(dates, pa.scalar(day, type=TIMESTAMP_TYPE)))
                    self.filesystem.create_dir(partition, recursive=True)
                    written.append(
                        write_whole_file(
                            self.filesystem, partition, rows, name, rename_into_place=self._rename_into_place
                        )
                    )
        except BaseException:
            for path in written:
                try:
                    self.filesystem.delete_file(path)
                except OSError:  # it stays, logged; the write's own error goes on
                    _log.exception("could not remove %s, written by a write that failed", path)
            raise
        return written

    def sweep_stale_temps(self, older_than_s: float = STALE_TEMP_AGE_S) -> int:
        """Removes the hidden temporary files (``.*.tmp``: a data file's, a dataset record's or copy's)
        that writers killed mid-write left under a local root and that were last written more than
        ``older_than_s`` ago; younger ones may belong to a live writer in another process. Readers never
        list them, but nothing else removed them: they only took disk. Under an object store's root,
        the hidden staged objects of dataset records (``_datasets/.*.tmp``,
        :mod:`control_plane.offline.uploads`); the staged objects left in a partition (a data file's or a
        compaction's) are removed by the partition's next compaction pass. Returns how many."""
        if not self._rename_into_place:
            return sweep_stale_objects(
                self.filesystem,
                f"{self.base_path}/{DATASETS_DIR}",
                recursive=False,
                older_than_s=older_than_s,
            )
        return sweep_stale_temps(self.base_path, older_than_s)

    # -- reading ---------------------------------------------------------------------------------------

    def schema(self, path: str) -> pa.Schema:
        return pq.read_schema(path, filesystem=self.filesystem)

    def read_file(
        self,
        path: str,
        columns: Sequence[str] | None = None,
        batch_size: int = 65_536,
        use_threads: bool = True,
    ) -> Generator[pa.RecordBatch, None, None]:
        """The batches of one file (a path from :meth:`files`), reading ``batch_size`` rows at a time
        (``use_threads``: see ``stored_rows.parquet_batches``); closing the generator closes the file.
        With ``uncounted``, a listed file gone since and in no merged file has no batches: only
        uncounted files are removed so (module doc). A failure to read it is the store's error, as in
        :meth:`open_rows`."""
        with self._reading(path), ExitStack() as stack:
            try:
                rows = stack.enter_context(self._opened(path))
            except FileNotFoundError:
                if self._uncounted is None:
                    raise
                # Listed while its intent was open, then removed uncounted (a recovery pass, a chunk that
                # failed) with its intent deleted before the intents' read: rows never counted, none read.
                return
            yield from rows.batches(columns, batch_size, use_threads)

    @contextmanager
    def open_rows(self, path: str) -> Iterator[StoredRows]:
        """The rows of one data file, opened for reading (a footer parsed), closed on exit. A file that a
        compaction merged and then deleted (a reader listed it before, or a lineage record names it) is
        read from the merged file that holds its rows now, as the same rows in the same batches. A
        failure to open or read it, in the block too (where its rows are read), is the store's error
        naming the file: a file no merged file names (gone since it was listed) UNAVAILABLE, bytes that
        are not Parquet FAILED_PRECONDITION (``store_errors``)."""
        with self._reading(path), self._opened(path) as rows:
            yield rows

    def _reading(self, path: str) -> contextlib.AbstractContextManager[None]:
        """The boundary of reading the stored file ``path``: an OSError or ArrowInvalid raised while it
        is opened or its rows are read (its pages truncated or garbled, an object store refusing the
        read) was INTERNAL; it is the store's error naming the file."""
        return store_errors(self.root, f"read {path}", decoding=True)

    @contextmanager
    def _opened(self, path: str) -> Iterator[StoredRows]:
        """:meth:`open_rows` without the error boundary: a file no merged file names is
        FileNotFoundError, which :meth:`read_file` answers itself for a store with ``uncounted``."""
        try:
            source = self.filesystem.open_input_file(path)
        except FileNotFoundError:
            located = locate(self.filesystem, path)
            if located is None:
                raise
            with self.filesystem.open_input_file(located.path) as merged:
                yield StoredRows(self._parquet(merged), located.offset, located.rows)
            return
        with source:
            yield StoredRows(self._parquet(source))

    def _parquet(self, source: pa.NativeFile) -> pq.ParquetFile:
        # Coalesced read-ahead pays off against an object store; a mapped local file needs none.
        return pq.ParquetFile(source, pre_buffer=not self._rename_into_place)

    def scan(
        self,
        view: str,
        version: int,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        columns: Sequence[str] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Rows of the view version with ``start <= event_ts < end`` (either bound optional), file by file,
        so memory stays bounded by one batch whatever the store's size. ``columns`` limits the columns
        read (``event_ts`` is read anyway when a bound is given, and dropped again if not asked for)."""
        lower = pa.scalar(utc(start, "start"), type=TIMESTAMP_TYPE) if start is not None else None
        upper = pa.scalar(utc(end, "end"), type=TIMESTAMP_TYPE) if end is not None else None
        wanted = list(columns) if columns is not None else None
        needs_ts = wanted is not None and (lower is not None or upper is not None) and EVENT_TS not in wanted
        read_columns = [*wanted, EVENT_TS] if (wanted is not None and needs_ts) else wanted
        for path in self.files(view, version, start, end):
            for batch in self.read_file(path, read_columns):
                if lower is not None or upper is not None:
                    batch = batch.filter(_within(batch.column(EVENT_TS), lower, upper))
                if needs_ts:
                    batch = batch.drop_columns([EVENT_TS])
                if batch.num_rows:
                    yield batch


def _check_partitionable(event_ts: pa.ChunkedArray) -> None:
    """Refuses event times outside ``[EARLIEST_EVENT_US, LATEST_EVENT_US]``: their date has no Python
    ``date``, so naming the partition raised OverflowError (an internal error, which jammed a stream
    materializer's outbox drain on every retry). Compared as integers, which hold any time."""
    micros = event_ts.cast(pa.int64())
    lowest, highest = pc.min_max(micros).values()
    if lowest.as_py() >= EARLIEST_EVENT_US and highest.as_py() <= LATEST_EVENT_US:
        return
    beyond = pc.filter(
        micros, pc.or_(pc.less(micros, EARLIEST_EVENT_US), pc.greater(micros, LATEST_EVENT_US))
    )
    raise InvalidArgument(
        f"column {EVENT_TS!r} holds {len(beyond)} time(s) outside years 1 to 9999, which no date partition"
        f" can name; the first {beyond[0]} microseconds since 1970-01-01"
    )


def _within(ts: pa.Array, lower: pa.Scalar | None, upper: pa.Scalar | None) -> pa.Array:
    mask = None
    if lower is not None:
        mask = pc.greater_equal(ts, lower)
    if upper is not None:
        below = pc.less(ts, upper)
        mask = below if mask is None else pc.and_(mask, below)
    return mask
