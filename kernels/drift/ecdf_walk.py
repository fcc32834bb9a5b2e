"""One merge pass over two ascending samples: the KS statistic ``D`` and the Wasserstein-1 area.

Both statistics are functions of the two empirical CDFs ``F_ref(x) = #{ref <= x} / n_ref`` and
``F_cur``. scipy's ``ks_2samp`` evaluates ``F_ref − F_cur`` at every pooled point. Between two distinct
current values ``F_cur`` is constant and ``F_ref`` only rises, so the maximum of the difference is
reached just below a current value and the minimum right at one; the pass evaluates exactly there,
from the same integer counts with the same float expression (``i / n_ref − k / n_cur``), so ``D`` is
bit-identical to scipy's. The area ``∫ |F_ref − F_cur| dx`` adds ``|F_ref(prev) − F_cur(prev)| · (x − prev)``
for every reference step, the terms ``scipy.stats.wasserstein_distance`` sums, in another order and
with ``i · (1/n)`` for ``i / n``; every term is ≥ 0, so the relative error stays within the
``n · ε`` bound of ~1e-10 for a million terms (in practice ~1e-15).

Cost: O(n_ref + n_cur) per feature once both are sorted; features run in parallel (numba ``prange``).

Sorted rows here follow numpy's order: ``-∞ … finite … +∞ … NaN``; :func:`finite_bounds` finds the
finite slice, so NaN and ±∞ are excluded (and counted by the caller), never fed into a statistic.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit, prange

from kernels.drift._parallel import PARALLEL_LAUNCH

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# Below this many values a thread pool costs more than it saves.
_THREADED_SORT_MIN_SIZE = 1 << 18


def _finite_bounds_py(sorted_row: FloatArray) -> tuple[int, int]:
    hi = sorted_row.shape[0]
    # ``not (v < inf)`` is true for +inf and for NaN, which numpy sorts after +inf.
    while hi > 0 and not (sorted_row[hi - 1] < np.inf):
        hi -= 1
    lo = 0
    while lo < hi and sorted_row[lo] == -np.inf:
        lo += 1
    return lo, hi


def _ks_and_area_py(ref: FloatArray, cur: FloatArray) -> tuple[float, float]:
    """(D, ∫|F_ref − F_cur|dx) for two non-empty ascending arrays of finite values.

    Driven by the (smaller) current sample: between two distinct current values ``F_cur`` is constant
    and ``F_ref`` only rises, so ``F_ref − F_cur`` peaks just before the next current value and bottoms
    out right at a current value. The reference values in between only feed the area, in a tight loop."""
    n_ref = ref.shape[0]
    n_cur = cur.shape[0]
    inv_ref = 1.0 / n_ref
    inv_cur = 1.0 / n_cur
    i = 0
    k = 0
    d_max = 0.0  # scipy's max and min include the last pooled point, where the difference is 0.
    d_min = 0.0
    area = 0.0
    prev = min(ref[0], cur[0])
    while k < n_cur:
        v = cur[k]
        f_cur = k * inv_cur
        # Reference values below v: both CDFs are constant on each [prev, x) and the ref one is i/n_ref
        # (values <= prev). Ties give a zero-width step, so they need no special case here.
        run = 0.0
        while i < n_ref and ref[i] < v:
            x = ref[i]
            run += abs(i * inv_ref - f_cur) * (x - prev)
            prev = x
            i += 1
        run += abs(i * inv_ref - f_cur) * (v - prev)
        area += run
        prev = v
        # Just below v: the value scipy sees at the largest pooled point < v (same integers, same
        # division), or 0.0 when there is none.
        below = i / n_ref - k / n_cur
        if below > d_max:
            d_max = below
        while i < n_ref and ref[i] == v:
            i += 1
        while k < n_cur and cur[k] == v:
            k += 1
        at = i / n_ref - k / n_cur
        if at < d_min:
            d_min = at
    run = 0.0
    while i < n_ref:
        x = ref[i]
        run += abs(i * inv_ref - 1.0) * (x - prev)
        prev = x
        i += 1
    area += run
    # scipy: minS = clip(-min, 0, 1); D = minS if minS > maxS else maxS.
    min_side = min(max(-d_min, 0.0), 1.0)
    d = min_side if min_side > d_max else d_max
    return d, area


_finite_bounds = njit(cache=True, nogil=True)(_finite_bounds_py)
_ks_and_area = njit(cache=True, nogil=True)(_ks_and_area_py)


def _score_rows_py(
    ref_sorted: FloatArray,
    ref_valid: IntArray,
    cur_sorted: FloatArray,
    edges: FloatArray,
    min_samples: int,
    cur_lo: IntArray,
    cur_hi: IntArray,
    cur_counts: IntArray,
    ks_d: FloatArray,
    area: FloatArray,
) -> None:
    """Per feature ``f`` (in parallel): the finite slice of the current row, its bin counts against
    ``edges[f]`` and, when both samples have at least ``min_samples`` finite values, D and the area.
    The bins are those of :func:`kernels.drift.binning.counts_from_sorted`, closed on the left, so a
    point mass's ``[v, nextafter(v))`` counts exactly the values equal to ``v``; any edge width works.

    ``ref_sorted[f, :ref_valid[f]]`` is the finite, ascending reference sample (a profile row)."""
    n_features = ref_sorted.shape[0]
    n_edges = edges.shape[1]
    for f in prange(n_features):
        lo, hi = _finite_bounds(cur_sorted[f])
        cur_lo[f] = lo
        cur_hi[f] = hi
        cur = cur_sorted[f, lo:hi]
        previous = 0
        for e in range(n_edges):
            below = np.searchsorted(cur, edges[f, e], side="left")
            cur_counts[f, e] = below - previous
            previous = below
        cur_counts[f, n_edges] = cur.shape[0] - previous
        n_ref = ref_valid[f]
        if n_ref >= min_samples and cur.shape[0] >= min_samples and n_ref > 0 and cur.shape[0] > 0:
            d, a = _ks_and_area(ref_sorted[f, :n_ref], cur)
            ks_d[f] = d
            area[f] = a
        else:
            ks_d[f] = np.nan
            area[f] = np.nan


_score_rows: Any = njit(cache=True, parallel=True)(_score_rows_py)


def finite_bounds(sorted_row: FloatArray) -> tuple[int, int]:
    """``(lo, hi)`` such that ``sorted_row[lo:hi]`` holds exactly the finite values of an ascending row."""
    lo, hi = _finite_bounds(sorted_row)
    return int(lo), int(hi)


def ks_and_area(ref_finite_sorted: FloatArray, cur_finite_sorted: FloatArray) -> tuple[float, float]:
    """``(D, ∫|F_ref − F_cur| dx)`` for two non-empty ascending samples of finite values."""
    if ref_finite_sorted.shape[0] == 0 or cur_finite_sorted.shape[0] == 0:
        raise ValueError("both samples need at least one finite value")
    d, a = _ks_and_area(
        np.ascontiguousarray(ref_finite_sorted, dtype=np.float64),
        np.ascontiguousarray(cur_finite_sorted, dtype=np.float64),
    )
    return float(d), float(a)


def score_rows(
    ref_sorted: FloatArray,
    ref_valid: IntArray,
    cur_sorted: FloatArray,
    edges: FloatArray,
    min_samples: int,
) -> tuple[IntArray, IntArray, IntArray, FloatArray, FloatArray]:
    """Batched pass over features; returns ``(cur_lo, cur_hi, cur_counts, ks_d, area)``.

    ``ks_d`` and ``area`` are NaN for features below ``min_samples`` (the caller flags them)."""
    n_features = ref_sorted.shape[0]
    cur_lo = np.empty(n_features, dtype=np.int64)
    cur_hi = np.empty(n_features, dtype=np.int64)
    cur_counts = np.empty((n_features, edges.shape[1] + 1), dtype=np.int64)
    ks_d = np.empty(n_features, dtype=np.float64)
    area = np.empty(n_features, dtype=np.float64)
    with PARALLEL_LAUNCH:
        _score_rows(
            ref_sorted, ref_valid, cur_sorted, edges, min_samples, cur_lo, cur_hi, cur_counts, ks_d, area
        )
    return cur_lo, cur_hi, cur_counts, ks_d, area


def sort_rows(values: FloatArray, by_column: bool) -> FloatArray:
    """Ascending copy, one row per feature (``[n_features, n]``); NaN sort last, as numpy does.

    ``by_column``: the input is ``[n, n_features]`` (rows are observations, the usual table layout).
    Sorting dominates a scoring pass, and numpy releases the GIL while sorting, so feature blocks are
    sorted on one thread per core."""
    matrix = values.T if by_column else values
    n_features = matrix.shape[0]
    workers = min(os.cpu_count() or 1, n_features)
    if workers <= 1 or matrix.size < _THREADED_SORT_MIN_SIZE:
        return np.sort(matrix, axis=1)
    out = np.empty(matrix.shape, dtype=np.float64)
    blocks = np.array_split(np.arange(n_features), workers)

    def sort_block(block: npt.NDArray[np.intp]) -> None:
        start, stop = int(block[0]), int(block[-1]) + 1
        out[start:stop] = np.sort(matrix[start:stop], axis=1)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(sort_block, [b for b in blocks if b.shape[0]]))
    return out
