"""Two-sample Kolmogorov–Smirnov test, two-sided, equal to ``scipy.stats.ks_2samp(ref, cur)`` with its
default ``method="auto"``.

The statistic ``D`` comes from :mod:`kernels.drift.ecdf_walk` (bit-identical to scipy's). The p-value
follows scipy's choice and formulas:

* ``max(n_ref, n_cur) <= 10_000`` → **exact**. ``D`` is snapped to the lattice ``h / lcm(n_ref, n_cur)``
  with ``h = round(D · lcm)`` (scipy returns the snapped value too). ``h == 0`` → p = 1. Equal sizes use
  the closed alternating sum for ``Pr(D_{n,n} >= h/n)``; unequal sizes count lattice paths that leave
  the band ``|x/m − y/n| < h/lcm`` with the sliding-window recursion of Hodges (1958) in the
  ``1 − p`` form of Viehmann (arXiv:2102.08037), the same recursion scipy runs. If the exact value is
  not a probability (overflow, NaN), scipy falls back to the asymptotic formula with the snapped ``D``;
  so do we.
* otherwise → **asymptotic**: ``p = kstwo.sf(D, round(m·n / (m + n)))`` with ``m >= n`` the sizes
  (:func:`kernels.drift.kstwo.kstwo_sf`: scipy's function, with its slow Smirnov-sum branch computed
  ~30× faster to ~1e-11 relative).

p is clipped to ``[0, 1]``. Only the two-sided alternative is provided (drift has no direction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from kernels.drift.ecdf_walk import ks_and_area
from kernels.drift.kstwo import kstwo_sf

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# scipy's ``MAX_AUTO_N``: 'auto' is exact when both sizes are at most this.
EXACT_MAX_N = 10_000


@dataclass(frozen=True)
class KsResult:
    """Two-sided two-sample KS: statistic, p-value, and whether the exact distribution was used."""

    statistic: float
    pvalue: float
    exact: bool


def _prob_outside_square_py(n: int, h: int) -> float:
    # Pr(D_{n,n} >= h/n) = 2·Σ_k (−1)^k binom(2n, n − (k+1)h) / binom(2n, n), each term divided by
    # binom(2n, n) and evaluated Horner-style to avoid cancellation (the order scipy uses).
    p = 0.0
    k = n // h
    while k >= 0:
        p1 = 1.0
        for j in range(h):
            p1 = (n - k * h - j) * p1 / (n + k * h + j + 1)
        p = p1 * (1.0 - p)
        k -= 1
    return 2 * p


def _prob_outside_band_py(m: int, n: int, g: int, h: int) -> float:
    # Proportion of monotone lattice paths (0,0)→(m,n) that leave |x/m − y/n| < h/lcm, computed as
    # 1 − p directly: A[j] holds, for the current column x = i, the share of paths to (i, j) that have
    # already left the band (normalised by binom(i + j, j)), over a sliding window [minj, maxj).
    if m < n:
        m, n = n, m
    mg = m // g
    ng = n // g
    minj = 0
    maxj = min(int(np.ceil(h / mg)), n + 1)
    curlen = maxj - minj
    length = min(2 * maxj + 2, n + 1)
    a = np.ones(length, dtype=np.float64)
    a[minj:maxj] = 0.0
    for i in range(1, m + 1):
        lastminj = minj
        lastlen = curlen
        minj = max(int(np.floor((ng * i - h) / mg)) + 1, 0)
        minj = min(minj, n)
        maxj = min(int(np.ceil((ng * i + h) / mg)), n + 1)
        if maxj <= minj:
            return 1.0
        val = 0.0 if minj == 0 else 1.0
        for jj in range(maxj - minj):
            j = jj + minj
            val = (a[jj + minj - lastminj] * i + val * j) / (i + j)
            a[jj] = val
        curlen = maxj - minj
        if lastlen > curlen:
            # Cells that dropped out of the window below the band count as having left it.
            a[maxj - minj : maxj - minj + (lastlen - curlen)] = 1.0
    return float(a[maxj - minj - 1])


_prob_outside_square: Any = njit(cache=True, nogil=True)(_prob_outside_square_py)
_prob_outside_band: Any = njit(cache=True, nogil=True)(_prob_outside_band_py)


def _exact_pvalue(d: float, n_ref: int, n_cur: int) -> tuple[float, float, bool]:
    """(snapped D, p, success) for the exact two-sided distribution."""
    g = math.gcd(n_ref, n_cur)
    lcm = (n_ref // g) * n_cur
    h = round(d * lcm)  # banker's rounding, like numpy's round; d·lcm is within ulps of an integer
    snapped = h * 1.0 / lcm
    if h == 0:
        return snapped, 1.0, True
    if n_ref == n_cur:
        p = float(_prob_outside_square(n_ref, h))
    else:
        p = float(_prob_outside_band(n_ref, n_cur, g, h))
    return snapped, p, bool(0.0 <= p <= 1.0)


def ks_pvalues(
    statistic: FloatArray, n_ref: IntArray, n_cur: IntArray
) -> tuple[FloatArray, FloatArray, BoolArray]:
    """Per feature: ``(D as scipy reports it, p-value, exact?)``. NaN statistics stay NaN (and not exact).

    ``n_ref`` / ``n_cur`` are the finite sample sizes the statistics were computed from."""
    d_out = np.asarray(statistic, dtype=np.float64).copy()
    p_out = np.full(d_out.shape, np.nan)
    exact = np.zeros(d_out.shape, dtype=np.bool_)
    asymptotic = np.zeros(d_out.shape, dtype=np.bool_)
    for f in range(d_out.shape[0]):
        if np.isnan(d_out[f]):
            continue
        n1 = int(n_ref[f])
        n2 = int(n_cur[f])
        if max(n1, n2) <= EXACT_MAX_N:
            snapped, p, ok = _exact_pvalue(float(d_out[f]), n1, n2)
            d_out[f] = snapped
            if ok:
                p_out[f] = p
                exact[f] = True
                continue
        asymptotic[f] = True
    if np.any(asymptotic):
        larger = np.maximum(n_ref[asymptotic], n_cur[asymptotic]).astype(np.float64)
        smaller = np.minimum(n_ref[asymptotic], n_cur[asymptotic]).astype(np.float64)
        effective_n = np.round(larger * smaller / (larger + smaller))
        p_out[asymptotic] = kstwo_sf(d_out[asymptotic], effective_n)
    finite = ~np.isnan(p_out)
    p_out[finite] = np.clip(p_out[finite], 0.0, 1.0)
    return d_out, p_out, exact


def ks_2samp(reference: npt.ArrayLike, current: npt.ArrayLike) -> KsResult:
    """Two-sided two-sample KS of two 1-D samples of finite values (NaN/±∞ are rejected here; the
    batched :func:`kernels.drift.drift_scores` counts and excludes them instead)."""
    ref = np.sort(np.asarray(reference, dtype=np.float64).ravel())
    cur = np.sort(np.asarray(current, dtype=np.float64).ravel())
    if ref.shape[0] == 0 or cur.shape[0] == 0:
        raise ValueError("ks_2samp needs two non-empty samples")
    if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(cur))):
        raise ValueError("ks_2samp needs finite values; use drift_scores to count and exclude NaN/inf")
    d, _ = ks_and_area(ref, cur)
    d_out, p_out, exact = ks_pvalues(
        np.array([d]), np.array([ref.shape[0]], dtype=np.int64), np.array([cur.shape[0]], dtype=np.int64)
    )
    return KsResult(statistic=float(d_out[0]), pvalue=float(p_out[0]), exact=bool(exact[0]))
