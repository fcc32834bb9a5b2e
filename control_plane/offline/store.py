"""The offline store: feature rows as Parquet files, partitioned by view / version / event date.

Layout, under a root that is a local folder or any ``pyarrow.fs`` URI (``file:///…``, ``s3://…``)::

    <root>/<view>/v<version>/date=YYYY-MM-DD/<uuid>.parquet

Every file holds the entity join-key columns, ``event_ts`` and ``ingested_ts`` (``timestamp[us, tz=UTC]``)
and one column per feature. A file is written whole or not at all: on a local filesystem it is written
under a hidden temporary name (a leading ``.``) and renamed into place, so a writer that dies mid-write
leaves only a hidden fragment that readers never list. On an object store, whose pyarrow output stream
completes an upload on close even after the writing raised, a file is written whole locally, uploaded under
a hidden name, read back and copied to its name (:mod:`control_plane.offline.uploads`).

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

Encoding (:func:`parquet_write_options`) is chosen for the point-in-time join, which decodes every
value of every feature column it asks for. Floating-point and timestamp columns, whose values rarely
repeat, are stored plain: a dictionary would only add a lookup per value (and one of a few thousand
distinct floats is kept, making the file larger), and a general-purpose codec finds little to remove
while costing decode time: plain pages decode about 1.6x as fast as dictionary-and-Snappy ones. Other
columns (join keys, integers, strings, booleans) keep a dictionary and Snappy, which shrink them well.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from clients.errors import InvalidArgument
from clients.time_bounds import EARLIEST_TIME_US, LATEST_TIME_US
from clients.uris import redact_uri
from control_plane.offline.data_files import is_data_file
from control_plane.offline.listing import OfflineStoreUnreadable, list_folder
from control_plane.offline.merged import hidden_names, locate
from control_plane.offline.roots import default_offline_root, open_filesystem
from control_plane.offline.store_errors import store_errors
from control_plane.offline.stored_rows import StoredRows

# Re-exported: readers import them from the store, as before the split.
from control_plane.offline.timestamps import TIMESTAMP_TYPE as TIMESTAMP_TYPE
from control_plane.offline.timestamps import normalize_timestamps as normalize_timestamps
from control_plane.offline.uploads import STALE_TEMP_AGE_S as STALE_TEMP_AGE_S
from control_plane.offline.uploads import publish_whole

EVENT_TS = "event_ts"
INGESTED_TS = "ingested_ts"
PARQUET_SUFFIX = ".parquet"
DATE_PREFIX = "date="
_TEMP_PREFIX = "."
#: Where dataset records lie under the root (``datasets``). A leading underscore: view names may not start
#: with one, so no view folder can collide with it.
DATASETS_DIR = "_datasets"
#: The event times a date partition can name (``date=YYYY-MM-DD``: years 1 to 9999, those of a Python
#: date), as microseconds since 1970 in UTC. Ingestion quarantines a record outside them (validation).
EARLIEST_EVENT_US = EARLIEST_TIME_US  # 0001-01-01T00:00:00Z
LATEST_EVENT_US = LATEST_TIME_US  # 9999-12-31T23:59:59.999999Z

_log = logging.getLogger("aether.offline.store")


class OfflineStore:
    """Append-only Parquet storage of feature rows. Safe for concurrent writers (every file has a unique
    name) and for readers running alongside writers (they never see a partial file)."""

    def __init__(
        self,
        root: str | None = None,
        uncounted: Callable[[], Collection[str]] | None = None,
        counted: Callable[[str, int], int] | None = None,
    ) -> None:
        """``uncounted``: the paths of files whose rows are not counted yet, which :meth:`files` leaves out
        (``ingestion.intents.reader_filter``); None lists every complete file (a writer's own store).
        ``counted``: the rows ingestion counted as stored into a view version (``ingestion.counted``):
        :meth:`files` refuses a version whose folder is missing while it says there are some."""
        self.root = root if root is not None else default_offline_root()
        self._uncounted = uncounted
        self._counted = counted
        self.filesystem, self.base_path = open_filesystem(self.root)
        # A local file is renamed into place; an object store's is staged and copied (uploads.py).
        self._rename_into_place = self.filesystem.type_name == "local"

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
        _check_name(view)
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
            (day, self._partition_dir(view, version, day.date()), _time_ordered_uuid())
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
                    written.append(self._write_file(partition, rows, name))
        except BaseException:
            for path in written:
                try:
                    self.filesystem.delete_file(path)
                except OSError:  # it stays, logged; the write's own error goes on
                    _log.exception("could not remove %s, written by a write that failed", path)
            raise
        return written

    def _write_file(self, partition: str, rows: pa.Table, name: str) -> str:
        final = f"{partition}/{name}{PARQUET_SUFFIX}"
        options = parquet_write_options(rows.schema)
        if not self._rename_into_place:
            # Written to its final key, a write that failed part-way was published part-way by pyarrow's
            # closing stream: hidden by its open intent until the recovery removed it, but read by every
            # listing of the partition (and failing it) where no intent named it any more (a writer that
            # lost its lease, a write without ``announce``).
            staged = f"{partition}/{_TEMP_PREFIX}{uuid.uuid4().hex}.tmp"
            publish_whole(self.filesystem, final, staged, lambda sink: pq.write_table(rows, sink, **options))
            return final
        temp = f"{partition}/{_TEMP_PREFIX}{uuid.uuid4().hex}.tmp"
        try:
            # Flushed to disk before the rename: otherwise a power cut could publish an empty name.
            with open(temp, "wb") as sink:
                pq.write_table(rows, sink, **options)
                sink.flush()
                os.fsync(sink.fileno())
            os.replace(temp, final)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return final

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

    def views(self) -> list[str]:
        """Views with a folder in the store, by name (``_datasets`` and hidden names are not views)."""
        infos = self._list_dir(self.base_path)
        return sorted(
            info.base_name
            for info in infos
            if info.type == pafs.FileType.Directory and not info.base_name.startswith((".", "_"))
        )

    def versions(self, view: str) -> list[int]:
        """Versions of ``view`` that have data."""
        infos = self._list_dir(f"{self.base_path}/{view}")
        names = [info.base_name for info in infos if info.type == pafs.FileType.Directory]
        return sorted(int(name[1:]) for name in names if name[:1] == "v" and name[1:].isdigit())

    def dates(self, view: str, version: int) -> list[dt.date]:
        """Event dates with a partition, oldest first."""
        return self._dates(view, version, self._list_dir(self._version_dir(view, version)))

    def _dates(self, view: str, version: int, infos: list[pafs.FileInfo]) -> list[dt.date]:
        found = []
        for info in infos:
            if info.type != pafs.FileType.Directory or not info.base_name.startswith(DATE_PREFIX):
                continue
            try:
                found.append(dt.date.fromisoformat(info.base_name[len(DATE_PREFIX) :]))
            except ValueError:
                continue  # not ours
        return sorted(found)

    def files(
        self, view: str, version: int, start: dt.datetime | None = None, end: dt.datetime | None = None
    ) -> list[str]:
        """Complete data files whose partition may hold event times in ``[start, end)``, oldest date first
        and in write order within a date. A snapshot: files written later are not in the list, which is
        what a multi-pass reader needs to see the same rows on every pass. With ``uncounted``, the files
        an open intent names are left out (module doc)."""
        first = _utc(start, "start").date() if start is not None else None
        last = _utc(end, "end").date() if end is not None else None
        paths: list[str] = []
        for day in self._dates(view, version, self._version_listing(view, version)):
            if (first is not None and day < first) or (last is not None and day > last):
                continue
            paths.extend(self.partition_files(self._partition_dir(view, version, day)))
        if self._uncounted is None or not paths:
            return paths
        # Intents read after the listing: a file is announced before it is written, so every listed file
        # not counted is named by an intent open now; read first, one announced after it would slip in.
        named = self._uncounted()
        return [path for path in paths if path not in named]

    def partition_files(self, partition: str) -> list[str]:
        """The data files of one partition folder in name order (``uncounted`` is applied by :meth:`files`):
        every listed file but those a merged file present replaced (:mod:`~control_plane.offline.merged`;
        only merged files' footers are read), so each row is read once whether or not its file was merged."""
        listed = {
            info.base_name: info.path
            for info in self._list_dir(partition)
            if info.type == pafs.FileType.File
            and info.base_name.endswith(PARQUET_SUFFIX)
            and not info.base_name.startswith((_TEMP_PREFIX, "_"))
        }
        # The merged files' footers are read: one that cannot be is the store's error, as any read is.
        with store_errors(self.root, f"list {partition}", decoding=True):
            hidden = hidden_names(self.filesystem, partition, listed)
        return [listed[name] for name in sorted(listed) if name not in hidden]

    def schema(self, path: str) -> pa.Schema:
        return pq.read_schema(path, filesystem=self.filesystem)

    def read_file(
        self,
        path: str,
        columns: Sequence[str] | None = None,
        batch_size: int = 65_536,
        use_threads: bool = True,
    ) -> Iterator[pa.RecordBatch]:
        """The batches of one file (a path from :meth:`files`), reading ``batch_size`` rows at a time
        (``use_threads``: see ``stored_rows.parquet_batches``). With ``uncounted``, a listed file gone
        since and in no merged file has no batches: only uncounted files are removed so (module doc).
        A failure to read it is the store's error, as in :meth:`open_rows`."""
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
        lower = pa.scalar(_utc(start, "start"), type=TIMESTAMP_TYPE) if start is not None else None
        upper = pa.scalar(_utc(end, "end"), type=TIMESTAMP_TYPE) if end is not None else None
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

    # -- paths -----------------------------------------------------------------------------------------

    def _version_dir(self, view: str, version: int) -> str:
        _check_name(view)
        return f"{self.base_path}/{view}/v{version}"

    def is_data_file(self, path: str, view: str, version: int) -> bool:
        """Whether ``path`` is a name :meth:`write` gives a data file of ``view`` version ``version`` here
        (``offline.data_files``): the intent recovery removes nothing else."""
        return is_data_file(self.base_path, path, view, version)

    def partition_path(self, view: str, version: int, day: dt.date) -> str:
        """The folder of one date partition (a filesystem path, without the URI scheme)."""
        return self._partition_dir(view, version, day)

    def _partition_dir(self, view: str, version: int, day: dt.date) -> str:
        return f"{self._version_dir(view, version)}/{DATE_PREFIX}{day.isoformat()}"

    def _list_dir(self, path: str) -> list[pafs.FileInfo]:
        """The folder's entries; none when it does not exist (no data yet); a file where a folder
        belongs is :class:`~control_plane.offline.listing.OfflineStoreUnreadable` (``listing``)."""
        infos = list_folder(self.filesystem, self.base_path, path, redact_uri(str(self.root)))
        return [] if infos is None else infos

    def _version_listing(self, view: str, version: int) -> list[pafs.FileInfo]:
        """The version folder's entries, for a reader. Its folder missing while ingestion counted rows
        stored into it (``counted``) is refused: the store is not the one ingestion wrote (another root,
        a volume not mounted), and reading it as empty built a training set of nulls. Nothing else
        removes a version's folder (compaction replaces files within a partition, the intent recovery
        removes only uncounted files), so a store ingestion wrote never trips this."""
        folder = self._version_dir(view, version)
        infos = list_folder(self.filesystem, self.base_path, folder, redact_uri(str(self.root)))
        if infos is not None:
            return infos
        rows = self._counted(view, version) if self._counted is not None else 0
        if rows > 0:
            raise OfflineStoreUnreadable(
                f"the offline store {redact_uri(str(self.root))} has no folder for feature view {view!r}"
                f" version {version} ({folder} does not exist), yet ingestion counted {rows} rows stored"
                " into it: the store is not the one ingestion wrote (AETHER_OFFLINE_ROOT), or its volume"
                " is not mounted; nothing was read"
            )
        return []


def _hidden_temp(name: str) -> bool:
    return name.startswith(_TEMP_PREFIX) and name.endswith(".tmp")


def sweep_stale_temps(
    folder: str, older_than_s: float = STALE_TEMP_AGE_S, is_temp: Callable[[str], bool] = _hidden_temp
) -> int:
    """Removes the files under the local ``folder`` whose name ``is_temp`` (by default hidden ``.*.tmp``)
    and that were last written more than ``older_than_s`` ago (younger ones may belong to a live writer
    in another process); returns how many. See :meth:`OfflineStore.sweep_stale_temps`."""
    cutoff = time.time() - older_than_s
    removed = 0
    for parent, _, names in os.walk(folder):  # links are not followed out of the root
        for name in names:
            if not is_temp(name):
                continue
            path = os.path.join(parent, name)
            try:
                if os.lstat(path).st_mtime < cutoff:
                    os.unlink(path)
                    removed += 1
            except FileNotFoundError:  # its writer finished or gave up meanwhile
                continue
    return removed


def sweep_stale_objects(
    filesystem: pafs.FileSystem,
    folder: str,
    *,
    recursive: bool,
    older_than_s: float = STALE_TEMP_AGE_S,
    is_temp: Callable[[str], bool] = _hidden_temp,
) -> int:
    """:func:`sweep_stale_temps` for ``folder`` on an object store: removes the objects whose name
    ``is_temp`` and that were last modified more than ``older_than_s`` ago; returns how many."""
    cutoff_ns = time.time_ns() - int(older_than_s * 1e9)
    selector = pafs.FileSelector(folder, allow_not_found=True, recursive=recursive)
    removed = 0
    for info in filesystem.get_file_info(selector):
        if info.type != pafs.FileType.File or not is_temp(info.base_name):
            continue
        if info.mtime_ns is None or info.mtime_ns >= cutoff_ns:
            continue
        with contextlib.suppress(FileNotFoundError):  # its writer removed it meanwhile
            filesystem.delete_file(info.path)
            removed += 1
    return removed


def parquet_write_options(schema: pa.Schema) -> dict[str, Any]:
    """Keyword arguments of ``pyarrow.parquet.write_table`` for a table of ``schema`` (module doc)."""
    plain = {
        field.name
        for field in schema
        if pa.types.is_floating(field.type) or pa.types.is_timestamp(field.type)
    }
    return {
        "use_dictionary": [name for name in schema.names if name not in plain],
        "compression": {name: "none" if name in plain else "snappy" for name in schema.names},
    }


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


def _utc(moment: dt.datetime, name: str) -> dt.datetime:
    if moment.tzinfo is None:
        raise InvalidArgument(f"{name} must carry a time zone")
    return moment.astimezone(dt.UTC)


def _check_name(view: str) -> None:
    # The name becomes a path segment: refuse anything that could climb out of or hide in the root.
    if not view or "/" in view or "\\" in view or view.startswith((".", "_")):
        raise InvalidArgument(f"invalid feature view name {view!r}")


_sequence = itertools.count()
_sequence_lock = threading.Lock()


def _time_ordered_uuid() -> str:
    """A UUIDv7-style name: 48 bits of milliseconds, then a per-process sequence and random bits, so names
    sort in write order (the sequence keeps order within one millisecond of one process)."""
    with _sequence_lock:
        sequence = next(_sequence) & 0xFFF
    millis = time.time_ns() // 1_000_000
    value = (millis & ((1 << 48) - 1)) << 80 | 0x7 << 76 | sequence << 64 | 0b10 << 62
    value |= secrets.randbits(62)
    return str(uuid.UUID(int=value))
