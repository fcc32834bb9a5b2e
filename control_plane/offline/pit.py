"""The point-in-time join of one view version from the offline store, streamed over its files.

Two passes over one snapshot of the view's file list (files written meanwhile are not seen, so both
passes read the same rows at the same global positions):

1. keys, event and ingestion times only, batch by batch, folded into the as-of state
   (``kernels.asof_join.asof_update``); then ``asof_finalize`` gives the winning row per label;
2. feature values, only from files (and batches) that hold a winner, scattered into the output arrays.

Memory: the output arrays (labels x features) plus one batch, whatever the store's size. Partitions are
pruned by date: a row newer than the newest label is eligible for none, and one older than the oldest
label minus the TTL could only win to be nulled by the TTL, which is the same answer as not winning.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from clients.errors import DataLoss
from control_plane.offline.keys import KeyEncoder
from control_plane.offline.resolve import OutputColumn, ViewPlan
from control_plane.offline.store import EVENT_TS, INGESTED_TS, TIMESTAMP_TYPE, OfflineStore
from kernels.asof_join import LabelIndex, asof_finalize, asof_update, new_state

Int64Array = npt.NDArray[np.int64]

# Event times of rows with a null time: later than any label (the kernel needs |ts| < 2**62).
_NEVER = 2**62
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Labels:
    """The label side, prepared once per entity and shared by every view of that entity."""

    encoder: KeyEncoder
    index: LabelIndex
    ts_min_us: int
    ts_max_us: int


def join_view(store: OfflineStore, plan: ViewPlan, labels: Labels, batch_size: int) -> dict[str, pa.Array]:
    """Result column name -> joined values in the labels' original order (null: no eligible value, older
    than the TTL, or stored as null)."""
    n = labels.index.size
    files = _snapshot(store, plan, labels)
    key_names = [key.name for key in plan.join_keys]

    state = new_state(labels.index)
    layout: list[tuple[str, list[int]]] = []
    offset = 0
    for path in files:
        counts = []
        for batch in store.read_file(path, [*key_names, EVENT_TS, INGESTED_TS], batch_size):
            asof_update(
                state,
                labels.encoder.encode(batch),
                _micros(batch.column(EVENT_TS), _NEVER),
                _micros(batch.column(INGESTED_TS), 0),
                row_offset=offset,
            )
            counts.append(batch.num_rows)
            offset += batch.num_rows
        layout.append((path, counts))
    indices = asof_finalize(state, plan.ttl_us)

    # Winners sorted by stored row: each batch's winners are one slice, found by binary search, so the
    # second pass touches only the rows it fills. (``kernels.asof_join.gather_partition`` scans every
    # label row per partition, which dominates with the hundreds of files a date-partitioned view has.)
    by_row = np.argsort(indices, kind="stable")
    sorted_rows = indices[by_row]
    columns = {c.name: _Column(c, n) for c in plan.columns}
    offset = 0
    for path, counts in layout:
        end = offset + sum(counts)
        if _winners(sorted_rows, offset, end) == (0, 0):
            offset = end
            continue
        present = set(store.schema(path).names)
        wanted = [c.feature for c in plan.columns if c.feature in present]
        batches = store.read_file(path, wanted, batch_size) if wanted else iter(())
        for count in counts:
            batch = next(batches, None) if wanted else None
            if batch is not None and batch.num_rows != count:
                raise DataLoss(f"{path} changed between the two passes of a point-in-time join")
            lo, hi = _winners(sorted_rows, offset, offset + count)
            if hi > lo:
                labels_hit = by_row[lo:hi]
                local = sorted_rows[lo:hi] - offset
                for column in columns.values():
                    column.fill(batch, labels_hit, local)
            offset += count
    return {name: column.finish() for name, column in columns.items()}


class _Column:
    """One result column being filled: values in label order and which of them are valid."""

    def __init__(self, spec: OutputColumn, n: int) -> None:
        self.spec = spec
        self.values = np.zeros(n, dtype=spec.dtype.to_pandas_dtype())
        self.valid = np.zeros(n, dtype=np.bool_)

    def fill(self, batch: pa.RecordBatch | None, labels_hit: Int64Array, local: Int64Array) -> None:
        if batch is None or self.spec.feature not in batch.schema.names:
            return  # a file written before the feature existed: no value
        stored = batch.column(self.spec.feature)
        if stored.type != self.spec.dtype:
            stored = stored.cast(self.spec.dtype)
        if stored.null_count:
            self.valid[labels_hit] = stored.is_valid().to_numpy(zero_copy_only=False)[local]
            stored = pc.fill_null(stored, pa.scalar(0, type=self.spec.dtype))
        else:
            self.valid[labels_hit] = True
        self.values[labels_hit] = stored.to_numpy(zero_copy_only=False)[local]

    def finish(self) -> pa.Array:
        return pa.array(self.values, type=self.spec.dtype, mask=~self.valid)


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


def _winners(sorted_rows: Int64Array, start: int, end: int) -> tuple[int, int]:
    """The slice of ``sorted_rows`` (matched stored rows, sorted; -1 for none) in ``[start, end)``."""
    lo, hi = np.searchsorted(sorted_rows, [start, end])
    return (int(lo), int(hi)) if hi > lo else (0, 0)


def _datetime(micros: int | None) -> dt.datetime | None:
    if micros is None:
        return None
    try:
        return _EPOCH + dt.timedelta(microseconds=micros)
    except OverflowError:
        return None  # beyond datetime's years: no bound on that side
