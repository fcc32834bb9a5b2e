"""Compaction of the offline store: merging a date partition's many small files into few.

A streaming view writes one small file per outbox drain (about one a second), so a busy view's day
partition gathers tens of thousands of files, and every point-in-time join and data-window check lists
and opens them all. A pass (:func:`compact_view`) does, per date partition of a view version, under a
lock on the partition (:mod:`control_plane.offline.partition_locks`: two passes never merge overlapping
runs, and a dead pass's lock goes with its process):

1. deletes the files that a merged file replaced at least ``grace_s`` ago (:class:`CompactionPolicy`):
   readers already leave them out, and the grace outlasts any read that listed them before the merge;
2. when the partition's day has ended ``lateness_s`` ago and more than ``min_files`` files are
   visible, merges each run of at least two visible files that sit next to each other in name order,
   are older than ``min_age_s``, were written by the store and share one schema (metadata included; a
   file of another schema, or a younger one, ends a run). The merged file holds the run's rows
   concatenated in name order (types, schema metadata and row order as they were) and records the
   run in its footer (:mod:`control_plane.offline.merged`, which also proves the name keeps the tie
   order). It is written whole to a local temporary file first, then published under its name
   (:func:`_publish`): on a local root the temporary file sits hidden in the partition, is fsynced and
   renamed into place, and the folder is fsynced; on an object store it is uploaded under a hidden
   name (:func:`_stage`), its size and footer read back there, and only then copied to its name (one
   server-side copy: the object appears whole or not at all), so a failed upload or read-back never
   shows readers anything, nor takes away anything they listed.

What a reader sees at each step: before the rename, the old files (a temporary name is never listed);
after it, the merged file, its sources left out by its footer (:meth:`OfflineStore.partition_files`);
after the deletes, the same. A reader that listed a source before the merge and opens it after the
delete reads its rows from the merged file (:meth:`OfflineStore.open_rows`). So each row is read
exactly once at every instant. A crash before the rename leaves a temporary file, swept at the next
start (:meth:`OfflineStore.sweep_stale_temps`; on an object store, a file in the local temporary
folder, swept at start, a hidden staged object, removed by the partition's next pass, and an
unfinished upload, which is never visible and which the bucket's lifecycle rule for incomplete
multipart uploads removes); after it, sources that readers skip, which the next pass deletes once the
grace is over; in the deletes, the rest of them, likewise.

One limit: the run is chosen among the files present. A file that appears later with a name inside a
merged run (a writer whose write took longer than ``min_age_s``, or whose clock lags by more) sorts
after the merged file, not between its sources: only exact ties (same event and ingestion time) with
the run's rows would be ordered differently than had it arrived in time.

A local root and an object store (``s3://…``) are compacted alike; an object store's partition locks
live in the metadata database, so a pass over one needs its engine (``locks``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from clients.env_values import env_float, env_int
from clients.errors import FailedPrecondition, NotFound, OfflineFileUndecodable
from clients.files import fsync_folder
from control_plane.offline.data_file_writes import parquet_write_options
from control_plane.offline.merged import (
    REPLACED_KEY,
    MergedRecord,
    Replaced,
    decode_record,
    encode_record,
    hidden_names,
    is_merged_name,
    is_written_name,
    merged_name,
    read_record,
    without_record,
)
from control_plane.offline.partition_locks import Held, PartitionLock, folder_lock
from control_plane.offline.store import OfflineStore
from control_plane.offline.store_errors import decoding_footer, store_errors
from control_plane.offline.store_layout import TEMP_PREFIX  # hidden ``.*.tmp``: swept, never listed
from control_plane.offline.uploads import (
    COMPACT_TEMP_PREFIX,
    STALE_TEMP_AGE_S,
    discard_staged,
    local_upload_temp,
    stage,
)

# Re-exported: the control plane's start and the tests import them from here, as before the split.
from control_plane.offline.uploads import S3_SINGLE_COPY_LIMIT as S3_SINGLE_COPY_LIMIT
from control_plane.offline.uploads import sweep_stale_upload_temps as sweep_stale_upload_temps
from control_plane.offline.uploads import upload_temp_folder as upload_temp_folder

# An object store's merged file while it is checked, before its copy to its name: hidden from readers.
_STAGED_PREFIX, _STAGED_SUFFIX = ".compact-", ".tmp"
#: A merged file must fit in one S3 CopyObject (``uploads.S3_SINGLE_COPY_LIMIT``), since it is published
#: by one copy. A run on an object store ends before its sources reach MAX_OBJECT_STORE_RUN_BYTES.
MAX_OBJECT_STORE_RUN_BYTES = 4 * 1024**3


@dataclass(frozen=True)
class CompactionPolicy:
    """When a partition is compacted and its replaced files deleted (module doc)."""

    min_files: int = 64
    min_age_s: float = 600.0
    lateness_s: float = 3600.0
    grace_s: float = 3600.0
    # Rows per row group of a merged file (pyarrow's default for one written whole): the merge holds
    # about one row group in memory, and readers of a replaced file's range read one at a time.
    row_group_rows: int = 1 << 20

    def __post_init__(self) -> None:
        if self.row_group_rows < 1:
            raise ValueError(f"row_group_rows must be at least 1, not {self.row_group_rows}")


def compaction_policy_from_env(env: Mapping[str, str]) -> CompactionPolicy:
    """``AETHER_OFFLINE_COMPACT_MIN_FILES``, ``_MIN_AGE_S``, ``_LATENESS_S`` and ``_GRACE_S``, each
    defaulting to :class:`CompactionPolicy`'s."""
    default = CompactionPolicy()
    prefix = "AETHER_OFFLINE_COMPACT_"
    return CompactionPolicy(
        min_files=env_int(env, f"{prefix}MIN_FILES", default.min_files, minimum=1),
        min_age_s=env_float(env, f"{prefix}MIN_AGE_S", default.min_age_s, minimum=0),
        lateness_s=env_float(env, f"{prefix}LATENESS_S", default.lateness_s, minimum=0),
        grace_s=env_float(env, f"{prefix}GRACE_S", default.grace_s, minimum=0),
    )


@dataclass(frozen=True)
class MergedRun:
    """One merged file: its partition, the files it replaced (base names, in order), its own base name
    and its rows. In a dry run, ``file_out`` is the name it would get but for its random part."""

    version: int
    day: dt.date
    files_in: tuple[str, ...]
    file_out: str
    rows: int


@dataclass
class CompactionReport:
    merged: list[MergedRun] = field(default_factory=list)
    #: Replaced files deleted (in a dry run: that would be).
    deleted: int = 0
    #: Partitions skipped because another pass held their lock, as (version, day).
    busy: list[tuple[int, dt.date]] = field(default_factory=list)
    #: Partitions left as they were, a file of theirs not decoding, as (version, day, the error naming it).
    skipped: list[tuple[int, dt.date, str]] = field(default_factory=list)


def compact_view(
    store: OfflineStore,
    view: str,
    version: int | None = None,
    policy: CompactionPolicy | None = None,
    now: dt.datetime | None = None,
    dry_run: bool = False,
    locks: PartitionLock | None = None,
    pending: Callable[[], Collection[str]] | None = None,
) -> CompactionReport:
    """One compaction pass over ``view`` (one ``version``, or every version with data). NOT_FOUND when
    the view (or that version) has no data. ``locks`` hold a partition's lock (by default, on a local
    root, a file lock in its folder); an object-store root has none of its own, so it needs them
    (:class:`control_plane.offline.partition_locks.DatabaseLocks`): FAILED_PRECONDITION without. A
    partition with a file that does not decode is left as it is and reported (``skipped``); the others go
    on. ``pending`` names the files of chunks not yet counted (``ingestion.intents.open_paths``), read after
    a partition is listed: none is merged (the intent recovery may remove it), and when it cannot be
    read (the database out of reach) its error stops the pass before anything is merged."""
    policy = policy or CompactionPolicy()
    now = now or dt.datetime.now(dt.UTC)
    if locks is None:
        if not _is_local(store.filesystem):
            raise FailedPrecondition(
                "compacting an object-store offline root needs the metadata database's partition locks"
            )
        locks = folder_lock
    versions = store.versions(view)
    if version is not None:
        if version not in versions:
            raise NotFound(f"feature view {view!r} has no offline data at version {version}")
        versions = [version]
    elif not versions:
        raise NotFound(f"feature view {view!r} has no offline data")
    report = CompactionReport()
    # The store's filesystem failing (full, read-only, a folder replaced by a file) is the store's error
    # (store_errors): it was INTERNAL, as if the pass had a bug.
    doing = f"compact the offline files of feature view {view!r}"
    with store_errors(store.root, doing):
        for number in versions:
            for day in store.dates(view, number):
                partition = store.partition_path(view, number, day)
                # Damaged bytes never decode, so they stopped the view's every pass and its later days
                # were never compacted; a setup fault or an outage (every partition's) still stops it.
                try:
                    with store_errors(store.root, doing):  # a footer's UndecodableFile, mapped here
                        if dry_run:
                            _compact_partition(
                                store, partition, number, day, policy, now, report, None, pending
                            )
                            continue
                        with locks(partition) as held:
                            if not held:
                                report.busy.append((number, day))
                                continue
                            _compact_partition(
                                store, partition, number, day, policy, now, report, held, pending
                            )
                except OfflineFileUndecodable as exc:
                    report.skipped.append((number, day, str(exc)))
    return report


def _compact_partition(
    store: OfflineStore,
    partition: str,
    version: int,
    day: dt.date,
    policy: CompactionPolicy,
    now: dt.datetime,
    report: CompactionReport,
    held: Held | None,  # None: a dry run, which changes nothing and so holds no lock
    pending: Callable[[], Collection[str]] | None = None,
) -> None:
    report.deleted += _delete_replaced(store.filesystem, partition, policy, now, held)
    if now < dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC) + dt.timedelta(
        seconds=policy.lateness_s
    ):
        return  # the day may still get rows
    visible = _visible(store.filesystem, partition)
    if len(visible) <= policy.min_files:
        return
    max_bytes = None if _is_local(store.filesystem) else MAX_OBJECT_STORE_RUN_BYTES
    # Read after the listing: a file's intent is committed before the file is written.
    uncounted = frozenset(pending()) if pending is not None else frozenset()
    older_than = now - dt.timedelta(seconds=policy.min_age_s)
    for run in _runs(store.filesystem, visible, older_than, max_bytes, uncounted):
        if held is None:
            rows = sum(_rows(store.filesystem, info.path) for info in run)
            out = merged_name(run[0].base_name, "0" * 32)
        else:
            out, rows = _merge(store, partition, run, now, held, policy.row_group_rows)
        report.merged.append(MergedRun(version, day, tuple(i.base_name for i in run), out, rows))


def _visible(filesystem: pafs.FileSystem, partition: str) -> list[pafs.FileInfo]:
    """The partition's data files that readers read, in name order (as OfflineStore.partition_files)."""
    infos = {
        info.base_name: info
        for info in filesystem.get_file_info(pafs.FileSelector(partition, allow_not_found=True))
        if info.type == pafs.FileType.File
        and info.base_name.endswith(".parquet")
        and not info.base_name.startswith((TEMP_PREFIX, "_"))
    }
    hidden = hidden_names(filesystem, partition, infos)
    return [infos[name] for name in sorted(infos) if name not in hidden]


def _runs(
    filesystem: pafs.FileSystem,
    visible: Sequence[pafs.FileInfo],
    older_than: dt.datetime,
    max_bytes: int | None = None,
    uncounted: Collection[str] = (),
) -> Iterator[list[pafs.FileInfo]]:
    """The runs to merge (module doc): at least two neighbours in name order, each old enough, written
    by the store, of one schema, none ``uncounted``; with ``max_bytes``, a run ends before its files'
    sizes pass it."""
    cutoff_ns = int(older_than.timestamp() * 1e9)
    run: list[pafs.FileInfo] = []
    schema: pa.Schema | None = None
    run_bytes = 0
    for info in visible:
        name = info.base_name
        eligible = (is_written_name(name) or is_merged_name(name)) and info.mtime_ns <= cutoff_ns
        eligible = eligible and info.path not in uncounted
        found = _schema(filesystem, info.path) if eligible else None
        full = max_bytes is not None and run_bytes + (info.size or 0) > max_bytes
        if found is None or schema is None or full or not found.equals(schema, check_metadata=True):
            if len(run) > 1:
                yield run
            run, schema = ([info], found) if found is not None else ([], None)
            run_bytes = info.size or 0
        else:
            run.append(info)
            run_bytes += info.size or 0
    if len(run) > 1:
        yield run


def _merge(
    store: OfflineStore,
    partition: str,
    run: Sequence[pafs.FileInfo],
    now: dt.datetime,
    held: Held,
    row_group_rows: int,
) -> tuple[str, int]:
    """Writes the merged file of ``run`` to a local temporary file, then publishes it (module doc); its
    name and rows."""
    filesystem = store.filesystem
    schema = _schema(filesystem, run[0].path)
    final_name = merged_name(run[0].base_name, uuid.uuid4().hex)
    local = _is_local(filesystem)
    # A local root's temporary file sits in the partition (one rename publishes it); an object store's
    # is written whole here before one upload, so a failed merge never leaves a partial object.
    if local:
        temp = f"{partition}/{TEMP_PREFIX}{uuid.uuid4().hex}.tmp"
    else:
        temp = local_upload_temp(COMPACT_TEMP_PREFIX)
    sources: list[Replaced] = []
    try:
        with open(temp, "wb") as sink:
            with pq.ParquetWriter(sink, schema, **parquet_write_options(schema)) as writer:
                pending: list[pa.Table] = []
                pending_rows = 0
                for info in run:
                    # Its pages are decoded here, not only its footer: bytes that do not decode (pyarrow's
                    # ArrowInvalid, or its OSError) are the store's error naming the file, as a reader of
                    # it answers; the ArrowInvalid came out of the pass as it was, INTERNAL.
                    with store_errors(store.root, f"read {info.path}", decoding=True):
                        table, replaced = _read_source(filesystem, info)
                    sources.append(replaced)
                    pending.append(table)
                    pending_rows += table.num_rows
                    if pending_rows >= row_group_rows:  # memory stays about one row group
                        writer.write_table(pa.concat_tables(pending), row_group_size=row_group_rows)
                        pending, pending_rows = [], 0
                if pending:
                    writer.write_table(pa.concat_tables(pending), row_group_size=row_group_rows)
                record = MergedRecord(int(now.timestamp() * 1_000_000), tuple(sources))
                writer.add_key_value_metadata({REPLACED_KEY: encode_record(record)})
            sink.flush()
            if local:
                os.fsync(sink.fileno())
        # An object store's file is uploaded under a hidden name and read back there, where no reader
        # looks, and only then copied to its name (one CopyObject: the object appears whole, or not).
        staged = temp if local else _stage(filesystem, temp, partition)
        try:
            held.confirm()
            _publish(filesystem, staged, f"{partition}/{final_name}")
        finally:
            if staged != temp:
                discard_staged(filesystem, staged)  # one left behind: swept by the partition's next pass
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    if local:
        fsync_folder(Path(partition))  # the new name is durable before any source can be deleted
    else:
        Path(temp).unlink(missing_ok=True)
    return final_name, sum(s.rows for s in sources)


def _stage(filesystem: pafs.FileSystem, temp: str, partition: str) -> str:
    """Uploads the local merged file ``temp`` under a hidden name in ``partition`` (readers and passes
    skip it) and reads its size and footer back (:func:`control_plane.offline.uploads.stage`); returns
    that name. An upload that fails, or does not read back as written, is removed and raises: it was
    never visible, so nothing a reader listed goes. (Uploaded under its final name, a cut-off upload was
    published part-way by pyarrow's closing stream and failed every listing until removed, and a
    read-back that failed once deleted a merged file that readers had already listed.)"""
    staged = f"{partition}/{_STAGED_PREFIX}{uuid.uuid4().hex}{_STAGED_SUFFIX}"
    stage(filesystem, temp, staged)
    return staged


def _is_write_staged(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) and name.endswith(_STAGED_SUFFIX)


def _is_staged(name: str) -> bool:
    return name.startswith(_STAGED_PREFIX) and name.endswith(_STAGED_SUFFIX)


def _read_source(filesystem: pafs.FileSystem, info: pafs.FileInfo) -> tuple[pa.Table, Replaced]:
    with filesystem.open_input_file(info.path) as source:
        with decoding_footer(info.path):
            parquet = pq.ParquetFile(source)
            raw = (parquet.metadata.metadata or {}).get(REPLACED_KEY)
        table = without_record(parquet.read())
    nested = decode_record(raw, info.path).sources if raw is not None else ()
    return table, Replaced(info.base_name, table.num_rows, nested)


def _schema(filesystem: pafs.FileSystem, path: str) -> pa.Schema:
    with decoding_footer(path):
        return pq.read_schema(path, filesystem=filesystem)


def _rows(filesystem: pafs.FileSystem, path: str) -> int:
    with filesystem.open_input_file(path) as source, decoding_footer(path):
        return int(pq.ParquetFile(source).metadata.num_rows)


def _delete_replaced(
    filesystem: pafs.FileSystem, partition: str, policy: CompactionPolicy, now: dt.datetime, held: Held | None
) -> int:
    """Deletes what every merged file of the partition made at least the grace ago replaced (a hidden
    merged file too: its sources are named by the newer one as well, so the order does not matter), and
    on an object store the hidden staged uploads that dead passes and writers left (``uploads``)."""
    files = [
        info
        for info in filesystem.get_file_info(pafs.FileSelector(partition, allow_not_found=True))
        if info.type == pafs.FileType.File
    ]
    names = {info.base_name for info in files}
    due_us = int(now.timestamp() * 1_000_000) - int(policy.grace_s * 1_000_000)
    doomed: set[str] = set()
    for name in sorted(names):
        if not is_merged_name(name):
            continue
        record = read_record(filesystem, f"{partition}/{name}")
        if record is not None and record.sources and record.compacted_at_us <= due_us:
            doomed.update(n for n in record.names() if n in names)
    if held is not None:  # None: a dry run
        for name in sorted(doomed):
            held.confirm()
            _delete(filesystem, f"{partition}/{name}")
        # A merged file staged by a pass that died or failed before removing it (_stage): under the
        # partition's lock no other pass uses one, and none was ever visible to readers. The lock is
        # confirmed first: a pass that lost it would remove the staged file of the pass that holds it.
        for name in sorted(n for n in names if _is_staged(n)):
            held.confirm()
            discard_staged(filesystem, f"{partition}/{name}")
        # A data file's upload staged by a writer that died before its copy
        # (``data_file_writes.write_whole_file``): hidden, and named by no intent; past the age rule, no live
        # writer's.
        if not _is_local(filesystem):
            cutoff_ns = time.time_ns() - int(STALE_TEMP_AGE_S * 1e9)
            for info in files:
                name = info.base_name
                if _is_staged(name) or not _is_write_staged(name):
                    continue
                if info.mtime_ns is not None and info.mtime_ns < cutoff_ns:
                    held.confirm()
                    discard_staged(filesystem, info.path)
    return len(doomed)


def _is_local(filesystem: pafs.FileSystem) -> bool:
    return bool(filesystem.type_name == "local")


# The steps whose effects readers can see, apart so a test can stop a pass between them.
def _publish(filesystem: pafs.FileSystem, temp: str, final: str) -> None:
    """Makes the complete file ``temp`` visible as ``final``: a rename of the local temporary file on a
    local root; on an object store a server-side copy of the staged object (:func:`_stage`), which
    creates ``final`` whole or not at all. A copy that reports a failure is not undone: if it did create
    ``final``, that is a whole copy of the checked bytes, which readers may have listed already."""
    if _is_local(filesystem):
        os.replace(temp, final)
        return
    filesystem.copy_file(temp, final)


def _delete(filesystem: pafs.FileSystem, path: str) -> None:
    if _is_local(filesystem):
        Path(path).unlink(missing_ok=True)
        return
    with contextlib.suppress(FileNotFoundError):  # another pass, or an earlier try, removed it
        filesystem.delete_file(path)
