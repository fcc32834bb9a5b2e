"""The point-in-time join of one view version from the offline store, streamed over its files.

Two passes over one snapshot of the view's file list (files written meanwhile are not seen, so both
passes read the same rows at the same global positions):

1. keys, event and ingestion times only, folded into the as-of state (``kernels.asof_join.asof_update``,
   pooling ~1M rows of small files per call); then ``asof_finalize`` gives the winning row per label;
2. feature values, only from files that hold a winner: each batch's winning rows are taken (Arrow
   ``take``, every column at once) and appended, so the winners come out in stored-row order, one
   contiguous run per column; one gather per column (``kernels.asof_join.gather_rows``) then puts them in
   label order, a label with no winner getting null.

Why the detour through stored-row order: writing each file's winners straight into label order touches
a random label row of every output column for every winner, a cache miss each (50 million for 1M labels
x 50 features); appending is sequential, and the final gather reads one column (a few MB) at a time.

Files are read ahead on a small thread pool (:func:`_read_ahead`): Parquet decoding and Arrow compute
release the GIL, so decoding the next files overlaps the as-of kernel or the take of the current one.
Pass 2 parses each footer again rather than keeping pass 1's: a parsed footer takes ~100 KB of memory,
which over thousands of files would outgrow the result.

Memory: the output arrays (labels x features) and the winners' values (at most as many rows), plus the
batches in flight and the pooled keys (24 MB), whatever the store's size (measured at 1M labels x 50
features: peak about 1.6x the output). Whatever a file's size too: pass 1 reads ahead at most ~1M rows'
keys of a file (:class:`JoinBounds`) and the rest of a bigger one, a merged file, batch by batch as it
folds them; pass 2 keeps only a batch's winners; and a compacted file's rows, a range of the merged file
that holds them now, are read a row group at a time (``stored_rows``).

Partitions are pruned by date: a row newer than the newest label is eligible for none, and one older
than the oldest label minus the TTL could only win to be nulled by the TTL, which is the same answer as
not winning.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from clients.errors import DataLoss
from control_plane.offline.keys import KeyEncoder
from control_plane.offline.resolve import ViewPlan
from control_plane.offline.store import EVENT_TS, INGESTED_TS, TIMESTAMP_TYPE, OfflineStore
from kernels.asof_join import (
    NO_MATCH,
    AsOfState,
    LabelIndex,
    asof_finalize,
    asof_update,
    gather_rows,
    new_state,
)

Int64Array = npt.NDArray[np.int64]
_Keys = tuple[Int64Array, Int64Array, Int64Array]  # a batch's entity codes, event and ingestion times
_Item = TypeVar("_Item")
_Result = TypeVar("_Result")

# Event times of rows with a null time: later than any label (the kernel needs |ts| < 2**62).
_NEVER = 2**62
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# Files being read ahead per reading thread: enough to keep the threads busy, few enough to bound memory.
_AHEAD_PER_THREAD = 2


@dataclass(frozen=True, slots=True)
class JoinBounds:
    """What pass 1 holds at once. The defaults suit a store of any size; smaller bounds only cost speed
    (more, smaller kernel calls and reads), never change an answer."""

    # Feature rows (keys and times: 24 bytes each) pooled per call of the as-of kernel.
    pooled_rows: int = 1 << 20
    # Rows of one file's keys a reading thread decodes ahead (a bigger file's rest is read as it is
    # folded): the bound on the keys in flight, per file read ahead.
    ahead_rows: int = 1 << 20

    def __post_init__(self) -> None:
        if self.pooled_rows < 1 or self.ahead_rows < 1:
            raise ValueError(f"join bounds must be at least one row: {self}")


DEFAULT_BOUNDS = JoinBounds()


@dataclass(frozen=True)
class Labels:
    """The label side, prepared once per entity and shared by every view of that entity."""

    encoder: KeyEncoder
    index: LabelIndex
    ts_min_us: int
    ts_max_us: int


@dataclass(frozen=True)
class _ScannedFile:
    """Pass 1's view of one file: what pass 2 needs to find its rows again and check it is unchanged."""

    path: str
    batch_rows: list[int]
    offset: int  # global index of the file's first row

    @property
    def end(self) -> int:
        return self.offset + sum(self.batch_rows)


def join_view(
    store: OfflineStore, plan: ViewPlan, labels: Labels, batch_size: int, bounds: JoinBounds = DEFAULT_BOUNDS
) -> tuple[dict[str, pa.Array], list[str]]:
    """Result column name -> joined values in the labels' original order (null: no eligible value, older
    than the TTL, or stored as null); and the snapshot of data files the join read, for the lineage."""
    files = _snapshot(store, plan, labels)
    scanned, indices = _match(store, plan, labels, files, batch_size, bounds)
    return _gather_values(store, plan, scanned, indices, batch_size), files


def _match(
    store: OfflineStore,
    plan: ViewPlan,
    labels: Labels,
    files: list[str],
    batch_size: int,
    bounds: JoinBounds,
) -> tuple[list[_ScannedFile], Int64Array]:
    """Pass 1: the winning global row per label (-1: none) and the layout of every file.

    A reading thread decodes at most ``bounds.ahead_rows`` rows of a file ahead (a whole small file); the
    rest of a bigger one (a merged file) is read batch by batch here, as it is folded, so the keys held
    stay bounded whatever a file's size."""
    key_names = [key.name for key in plan.join_keys]
    columns = [*key_names, EVENT_TS, INGESTED_TS]

    def decode(batch: pa.RecordBatch) -> _Keys:
        return (
            labels.encoder.encode(batch),
            _micros(batch.column(EVENT_TS), _NEVER),
            _micros(batch.column(INGESTED_TS), 0),
        )

    def read_head(path: str) -> tuple[list[_Keys], Generator[pa.RecordBatch, None, None] | None]:
        """The keys of the file's first batches, up to ``bounds.ahead_rows`` rows, and its batches still
        to read, the file left open for them (None: there are none)."""
        batches = store.read_file(path, columns, batch_size, use_threads=False)
        head: list[_Keys] = []
        rows = 0
        for batch in batches:
            head.append(decode(batch))
            rows += batch.num_rows
            if rows >= bounds.ahead_rows:
                return head, batches
        return head, None

    state = new_state(labels.index)
    scanned: list[_ScannedFile] = []
    offset = 0
    # Small files' keys are pooled into one kernel call: fewer calls, and big enough to use the threads.
    pooled: list[_Keys] = []
    pooled_start = pooled_rows = 0
    for path, (head, rest) in zip(files, _read_ahead(files, read_head), strict=True):
        file_start = offset
        rows: list[int] = []
        try:
            for keys in itertools.chain(head, map(decode, rest or ())):
                count = keys[0].shape[0]
                rows.append(count)
                pooled.append(keys)
                pooled_rows += count
                offset += count
                if pooled_rows >= bounds.pooled_rows:
                    _fold(state, pooled, pooled_start)
                    pooled, pooled_start, pooled_rows = [], offset, 0
        finally:
            if rest is not None:
                rest.close()  # the file, also when the join fails part-way
        scanned.append(_ScannedFile(path, rows, file_start))
    _fold(state, pooled, pooled_start)
    return scanned, asof_finalize(state, plan.ttl_us)


def _fold(state: AsOfState, batches: list[_Keys], row_offset: int) -> None:
    """Feeds consecutive batches (the first at global row ``row_offset``) to the as-of kernel at once."""
    if batches:
        codes, event_ts, ingested_ts = (np.concatenate(part) for part in zip(*batches, strict=True))
        asof_update(state, codes, event_ts, ingested_ts, row_offset=row_offset)


def _gather_values(
    store: OfflineStore, plan: ViewPlan, scanned: list[_ScannedFile], indices: Int64Array, batch_size: int
) -> dict[str, pa.Array]:
    """Pass 2: the winners' values, in label order."""
    # winners: the distinct matched global rows, sorted; position: where each label's winner is in it.
    winners, position = np.unique(indices, return_inverse=True)
    position = position.reshape(-1).astype(np.int64, copy=False)
    if winners.shape[0] and winners[0] == NO_MATCH:
        winners = winners[1:]
        position -= 1  # labels without a winner land on -1: null
    bounds = np.searchsorted(winners, [[f.offset, f.end] for f in scanned]).reshape(-1, 2)
    hit_files = [(f, int(lo), int(hi)) for f, (lo, hi) in zip(scanned, bounds, strict=True) if hi > lo]
    # One stored column per distinct feature (two references can name the same one).
    schema = pa.schema({c.feature: c.dtype for c in plan.columns})

    def take_winners(job: tuple[_ScannedFile, int, int]) -> list[pa.RecordBatch]:
        file, lo, hi = job
        return _file_winners(store, schema, file, winners[lo:hi] - file.offset, batch_size)

    taken = [batch for batches in _read_ahead(hit_files, take_winners) for batch in batches]
    table = pa.Table.from_batches(taken, schema)
    del taken
    stored = {name: table.column(name) for name in schema.names}
    del table  # each column's winners are released once it is in label order

    # Which labels have a winner, as a validity bitmap shared by every column without stored nulls.
    matched = _Validity.of(position >= 0)

    def label_order(name: str) -> pa.Array:
        return _in_label_order(stored.pop(name), position, matched)

    ordered = dict(zip(schema.names, _read_ahead(schema.names, label_order), strict=True))
    return {c.name: ordered[c.feature] for c in plan.columns}


def _file_winners(
    store: OfflineStore, schema: pa.Schema, file: _ScannedFile, rows: Int64Array, batch_size: int
) -> list[pa.RecordBatch]:
    """The values of ``rows`` (sorted rows of the file) in ``schema``, one batch per batch read."""
    pieces: list[pa.RecordBatch] = []
    with store.open_rows(file.path) as stored:
        present = set(stored.schema_arrow.names)
        wanted = [name for name in schema.names if name in present]
        batches = stored.batches(wanted, batch_size, use_threads=False) if wanted else iter(())
        start = 0
        for count in file.batch_rows:
            batch = next(batches, None)
            if wanted and (batch is None or batch.num_rows != count):
                raise DataLoss(f"{file.path} changed between the two passes of a point-in-time join")
            lo, hi = np.searchsorted(rows, [start, start + count])
            if hi > lo:
                taken = batch.take(pa.array(rows[lo:hi] - start)) if batch is not None else None
                pieces.append(_conform(taken, schema, int(hi - lo)))
            start += count
    return pieces


def _conform(taken: pa.RecordBatch | None, schema: pa.Schema, rows: int) -> pa.RecordBatch:
    """``taken`` in ``schema``: stored types cast to the registered ones, and nulls for a feature that a
    file written before it existed lacks."""
    if taken is not None and taken.schema.equals(schema):
        return taken
    arrays = []
    for field in schema:
        index = taken.schema.get_field_index(field.name) if taken is not None else -1
        if index < 0:
            arrays.append(pa.nulls(rows, type=field.type))
            continue
        assert taken is not None
        values = taken.column(index)
        arrays.append(values if values.type == field.type else values.cast(field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


@dataclass(frozen=True)
class _Validity:
    """A validity bitmap (None: every row valid) and its null count."""

    bitmap: pa.Buffer | None
    nulls: int

    @classmethod
    def of(cls, valid: npt.NDArray[np.bool_]) -> _Validity:
        nulls = int(valid.size - np.count_nonzero(valid))
        return cls(pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None, nulls)


def _in_label_order(winners: pa.ChunkedArray, position: Int64Array, matched: _Validity) -> pa.Array:
    """One column's winners (stored-row order) gathered into label order; ``matched``: the labels with
    a winner. Null rows hold zero in the data buffer, as a Parquet round trip gives: the dataset hash
    covers those bytes too."""
    stored = pa.concat_arrays(winners.chunks) if winners.num_chunks else pa.array([], type=winners.type)
    del winners
    stored_valid = None
    if stored.null_count:
        stored_valid = stored.is_valid().to_numpy(zero_copy_only=False)
        zero = False if pa.types.is_boolean(stored.type) else 0  # pyarrow will not read 0 as a bool
        stored = pc.fill_null(stored, pa.scalar(zero, type=stored.type))
    values = np.ascontiguousarray(stored.to_numpy(zero_copy_only=False), dtype=stored.type.to_pandas_dtype())
    # One thread per column: the columns themselves are spread over the reading threads.
    out, valid = gather_rows(values, position, threads=1)
    if stored_valid is None and not pa.types.is_boolean(stored.type):
        # A number's values as they are, under the shared bitmap (building one per column cost a third
        # of the gather).
        data = pa.py_buffer(out)
        return pa.Array.from_buffers(stored.type, len(out), [matched.bitmap, data], null_count=matched.nulls)
    if stored_valid is not None:
        valid &= gather_rows(stored_valid, position, threads=1)[0]
    return pa.array(out, type=stored.type, mask=~valid)


def _read_ahead(items: list[_Item], read: Callable[[_Item], _Result]) -> Iterator[_Result]:
    """``read(item)`` for every item, in order, computed ahead on a few threads (a bounded number in
    flight). An error is raised where its item's result would have been yielded."""
    threads = max(1, min(len(os.sched_getaffinity(0)), len(items)))
    if threads == 1:
        yield from map(read, items)
        return
    pending: deque[Future[_Result]] = deque()
    queue: Iterable[_Item] = iter(items)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        try:
            for item in queue:
                pending.append(pool.submit(read, item))
                if len(pending) >= threads * _AHEAD_PER_THREAD:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _snapshot(store: OfflineStore, plan: ViewPlan, labels: Labels) -> list[str]:
    start = labels.ts_min_us - plan.ttl_us if plan.ttl_us > 0 else None
    return store.files(plan.view, plan.version, _datetime(start), _datetime(labels.ts_max_us))


def _micros(column: pa.Array, null_as: int) -> Int64Array:
    if column.type != TIMESTAMP_TYPE:
        column = column.cast(TIMESTAMP_TYPE)
    as_int = column.cast(pa.int64())
    if as_int.null_count:
        as_int = pc.fill_null(as_int, null_as)
    return np.ascontiguousarray(as_int.to_numpy(zero_copy_only=False), dtype=np.int64)


def _datetime(micros: int | None) -> dt.datetime | None:
    if micros is None:
        return None
    try:
        return _EPOCH + dt.timedelta(microseconds=micros)
    except OverflowError:
        return None  # beyond datetime's years: no bound on that side
