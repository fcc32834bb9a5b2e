"""The compiled loops of the point-in-time join (:mod:`kernels.asof_join` holds the rules, the state and
the Python API; read its docstring first): the counting sort of the labels, the blocked scatter of
feature rows into buckets, the merge of private bucket copies, the sweep that turns buckets into answers,
and the prefetching gather of values. Plain arrays in, arrays filled in place; no Python objects."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from kernels.prefetch import prefetch as _prefetch

Int64Array = npt.NDArray[np.int64]

NO_MATCH = -1
# Columns of the bucket array (one row per sorted label position): see ``asof_join.AsOfState``.
BEST_IDX, BEST_TS, BEST_INGEST = 0, 1, 2

# Runs of labels longer than this are sorted by time with a merge sort rather than an insertion sort.
_INSERTION_SORT_MAX = 32
# Feature rows handled per stage (``asof_join``'s docstring): enough prefetches in flight to hide memory
# latency.
_BLOCK = 64
# Rows ahead of the current one whose values the gather prefetches (wide rows; one-column rows).
_GATHER_AHEAD = 16
_GATHER_AHEAD_NARROW = 64
_CACHE_LINE = 64


@njit(cache=True, nogil=True)
def scatter(
    first_run: int,
    end_run: int,
    run_starts: Int64Array,
    run_entities: Int64Array,
    entity_min: int,
    dense: bool,
    sorted_ts: Int64Array,
    feat_entity: Int64Array,
    feat_ts: Int64Array,
    feat_ingest: Int64Array,
    row_offset: int,
    best: Int64Array,
) -> None:
    n_runs = run_starts.shape[0] - 1
    entity_max = entity_min + n_runs - 1  # only meaningful in dense mode
    runs = np.empty(_BLOCK, dtype=np.int64)
    slots = np.empty(_BLOCK, dtype=np.int64)
    n = feat_entity.shape[0]
    for block in range(0, n, _BLOCK):
        size = min(n, block + _BLOCK) - block
        # Stage 1: each row's label run (-1: no label of its entity, or another thread's entity).
        for k in range(size):
            e = feat_entity[block + k]
            run = -1
            if dense:
                # Compare before subtracting: e - entity_min could wrap around for extreme ids.
                if entity_min <= e <= entity_max:
                    run = e - entity_min
            else:
                found = np.searchsorted(run_entities, e)
                if found < n_runs and run_entities[found] == e:
                    run = found
            if run < first_run or run >= end_run:
                run = -1
            runs[k] = run
            if run >= 0:
                _prefetch(run_starts, run)
        # Stage 2: prefetch each run's label timestamps (both ends: a typical run spans one or two lines).
        for k in range(size):
            run = runs[k]
            if run >= 0 and run_starts[run + 1] > run_starts[run]:
                _prefetch(sorted_ts, run_starts[run])
                _prefetch(sorted_ts, run_starts[run + 1] - 1)
        # Stage 3: the bucket, the first label of the run at or after the feature's event time.
        for k in range(size):
            run = runs[k]
            slots[k] = -1
            if run < 0:
                continue
            t = feat_ts[block + k]
            lo = run_starts[run]
            run_end = run_starts[run + 1]
            hi = run_end
            while lo < hi:
                mid = (lo + hi) >> 1
                if sorted_ts[mid] < t:
                    lo = mid + 1
                else:
                    hi = mid
            if lo < run_end:  # else later than every label of its entity: eligible for none
                slots[k] = lo
                _prefetch(best, lo * 3)
                _prefetch(best, lo * 3 + 2)  # a 24-byte bucket can straddle two lines
        # Stage 4: keep the best row per bucket, in row order.
        for k in range(size):
            lo = slots[k]
            if lo < 0:
                continue
            f = block + k
            keep_better(best, lo, row_offset + f, feat_ts[f], feat_ingest[f])


@njit(cache=True, nogil=True)
def merge_buckets(best: Int64Array, other: Int64Array, first: int, end: int) -> None:
    """Folds ``other``'s buckets ``[first, end)`` into ``best``'s, with the rule every row meets."""
    for lo in range(first, end):
        if other[lo, BEST_IDX] >= 0:
            keep_better(best, lo, other[lo, BEST_IDX], other[lo, BEST_TS], other[lo, BEST_INGEST])


@njit(cache=True, nogil=True)
def keep_better(best: Int64Array, lo: int, idx: int, t: int, ingest: int) -> None:
    """Bucket ``lo`` keeps feature row ``idx`` (event time ``t``, ingestion time ``ingest``) if it beats
    the row held: greater event time, then ingestion time, then row index (the module's rules)."""
    current = best[lo, BEST_IDX]
    held_ts = best[lo, BEST_TS]
    if (
        current < 0
        or t > held_ts
        or (
            t == held_ts
            and (ingest > best[lo, BEST_INGEST] or (ingest == best[lo, BEST_INGEST] and idx > current))
        )
    ):
        best[lo, BEST_IDX] = idx
        best[lo, BEST_TS] = t
        best[lo, BEST_INGEST] = ingest


@njit(cache=True, nogil=True)
def counting_sort(
    entity: Int64Array,
    ts: Int64Array,
    entity_min: int,
    order: Int64Array,
    sorted_ts: Int64Array,
    run_starts: Int64Array,
) -> None:
    """Fills ``order``, ``sorted_ts`` (labels by entity, then time) and ``run_starts`` (dense runs, one
    per entity id from ``entity_min``; zeroed on entry)."""
    n = entity.shape[0]
    for i in range(n):
        run_starts[entity[i] - entity_min + 1] += 1
    for r in range(1, run_starts.shape[0]):
        run_starts[r] += run_starts[r - 1]
    filled = run_starts[:-1].copy()
    for i in range(n):
        r = entity[i] - entity_min
        order[filled[r]] = i
        filled[r] += 1
    for j in range(n):
        sorted_ts[j] = ts[order[j]]
    for r in range(run_starts.shape[0] - 1):
        lo = run_starts[r]
        hi = run_starts[r + 1]
        if hi - lo > _INSERTION_SORT_MAX:
            by_time = np.argsort(sorted_ts[lo:hi], kind="mergesort")
            order[lo:hi] = order[lo:hi][by_time]
            sorted_ts[lo:hi] = sorted_ts[lo:hi][by_time]
            continue
        for j in range(lo + 1, hi):  # insertion sort: runs are a few labels long
            t = sorted_ts[j]
            o = order[j]
            k = j - 1
            while k >= lo and sorted_ts[k] > t:
                sorted_ts[k + 1] = sorted_ts[k]
                order[k + 1] = order[k]
                k -= 1
            sorted_ts[k + 1] = t
            order[k + 1] = o


@njit(cache=True, nogil=True)
def sweep(
    run_starts: Int64Array,
    sorted_ts: Int64Array,
    order: Int64Array,
    best: Int64Array,
    ttl_us: int,
    out: Int64Array,
) -> None:
    for run in range(run_starts.shape[0] - 1):
        carried_idx = NO_MATCH
        carried_ts = 0
        for j in range(run_starts[run], run_starts[run + 1]):
            # A later non-empty bucket always beats every earlier one of the same entity (module doc).
            if best[j, BEST_IDX] >= 0:
                carried_idx = best[j, BEST_IDX]
                carried_ts = best[j, BEST_TS]
            if carried_idx >= 0 and ttl_us > 0 and carried_ts < sorted_ts[j] - ttl_us:
                out[order[j]] = NO_MATCH
            else:
                out[order[j]] = carried_idx


@njit(cache=True, nogil=True)
def gather(
    values: npt.NDArray[Any],
    indices: Int64Array,
    row_offset: int,
    out: npt.NDArray[Any],
    valid: npt.NDArray[np.bool_],
    first: int,
    end: int,
    zero_misses: bool,
) -> None:
    n_rows = values.shape[0]
    width = values.shape[1]
    if width == 1:  # one column: a tighter loop, prefetching further ahead
        for i in range(first, end):
            ahead = i + _GATHER_AHEAD_NARROW
            if ahead < end:
                upcoming = indices[ahead] - row_offset
                if 0 <= upcoming < n_rows:
                    _prefetch(values, upcoming)
            local = indices[i] - row_offset
            if 0 <= local < n_rows:
                out[i, 0] = values[local, 0]
                valid[i] = True
            elif zero_misses:
                out[i, 0] = 0
                valid[i] = False
        return
    per_line = max(1, _CACHE_LINE // values.itemsize)
    for i in range(first, end):
        # Matched rows are scattered over the values: ask for a later row's lines while copying this one.
        ahead = i + _GATHER_AHEAD
        if ahead < end:
            upcoming = indices[ahead] - row_offset
            if 0 <= upcoming < n_rows:
                for c in range(0, width, per_line):
                    _prefetch(values, upcoming * width + c)
                _prefetch(values, upcoming * width + width - 1)
        local = indices[i] - row_offset
        if 0 <= local < n_rows:
            for c in range(width):
                out[i, c] = values[local, c]
            valid[i] = True
        elif zero_misses:
            for c in range(width):
                out[i, c] = 0
            valid[i] = False
