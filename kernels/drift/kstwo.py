"""Survival function of the two-sided one-sample KS distribution, ``scipy.stats.kstwo.sf(d, n)``, with
its slowest branch replaced by a fast equivalent.

scipy (Simard & L'Ecuyer 2011) picks a method per ``(n, d)``. For ``n > 140`` and
``2.2 <= n·d² < 370`` (with ``1 < n·d``, ``d < 0.5``) it returns ``2 · smirnov(n, d)``, the one-sided
Smirnov tail, which scipy sums exactly in double-double arithmetic: about 1.5 µs per term and ~n
terms, i.e. ~0.15 s for n ≈ 90 000 and over a second for n = 10⁶. That branch is exactly where a
moderately drifted feature lands (p between ~1e-160 and ~0.02). Here the same Birnbaum–Tingey sum

    smirnov(n, x) = x · Σ_{j=0}^{J} C(n, j) · (1 − x − j/n)^{n−j} · (x + j/n)^{j−1},
    J = ⌈n(1 − x)⌉ − 1   (terms with 1 − x − j/n <= 0 excluded),

is evaluated in log space in plain double precision (numba), with the same early stop as scipy (stop
once ``4 · remaining_terms · term < ε · sum``). Every term carries a relative error of at most ~1e-11
(the exponents are up to ~n, times ε) and all terms are positive, so the result agrees with scipy's to
~1e-10 relative; results below ~1e-300 (subnormal doubles, where scipy's own value has only a few
significant bits) agree in absolute terms. Every other ``(n, d)`` is handed to scipy unchanged, and
scipy's own approximation for n > 10⁶ is kept, so the function is scipy's wherever it is not faster.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit, prange
from scipy import special, stats

from kernels.drift._parallel import PARALLEL_LAUNCH

FloatArray = npt.NDArray[np.float64]

# scipy.special.smirnov switches to an approximation above this n (SMIRNOV_MAX_COMPUTE_N).
_SMIRNOV_MAX_EXACT_N = 1_000_000
# scipy's kstwo: below n = 141 it uses other exact methods; these bound the 2·smirnov branch.
_KSTWO_SMALL_N = 140
_KSTWO_SMIRNOV_MIN_NXX = 2.2
_KSTWO_ZERO_NXX = 370.0
_DOUBLE_EPS = 2.220446049250313e-16
# Veltkamp splitter for an exact product of two doubles without FMA: 2**27 + 1.
_SPLITTER = 134217729.0


def _two_product_py(a: float, b: float) -> tuple[float, float]:
    # Dekker: a·b = p + e exactly.
    p = a * b
    t = _SPLITTER * a
    a_hi = t - (t - a)
    a_lo = a - a_hi
    t = _SPLITTER * b
    b_hi = t - (t - b)
    b_lo = b - b_hi
    e = ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo
    return p, e


_two_product = njit(cache=True, nogil=True)(_two_product_py)


def _smirnov_sf_py(n: int, x: float) -> float:
    """One-sided Smirnov tail ``P(D_n⁺ >= x)`` for ``1 < n·x``, ``x < 0.5``, ``n <= 10⁶``."""
    # floor(n·x) and its fractional part from the exact product (scipy does this in double-double).
    nx_hi, nx_lo = _two_product(float(n), x)
    nx_floor = float(math.floor(nx_hi))
    alpha = (nx_hi - nx_floor) + nx_lo
    if alpha < 0.0:
        nx_floor -= 1.0
        alpha += 1.0
    if alpha >= 1.0:
        nx_floor += 1.0
        alpha -= 1.0
    last_j = n - int(nx_floor) - (0 if alpha == 0.0 else 1)
    if alpha == 0.0:
        last_j -= 1  # 1 − x − j/n == 0 exactly for the next j: that term is 0 and left out
    n_terms = last_j + 1
    log_eps_quarter = math.log(_DOUBLE_EPS / 4.0)
    # j = 0: (1 − x)^n / x.
    log_term = n * math.log1p(-x) - math.log(x)
    top = log_term  # running log-sum-exp: sum = exp(top) · scaled
    scaled = 1.0
    log_binom = 0.0
    log_binom_comp = 0.0
    for j in range(1, n_terms):
        # log C(n, j) by increments, Kahan-compensated over up to 10⁶ steps.
        step = math.log((n - j + 1) / j) - log_binom_comp
        total = log_binom + step
        log_binom_comp = (total - log_binom) - step
        log_binom = total
        # x + j/n as one correctly rounded ratio: its log is then good to ~1 ulp, which matters
        # because it is multiplied by up to n.
        upper = ((j + nx_hi) + nx_lo) / n
        log_term = log_binom + (n - j) * math.log1p(-upper) + (j - 1) * math.log(upper)
        if log_term > top:
            scaled = scaled * math.exp(top - log_term) + 1.0
            top = log_term
        else:
            scaled += math.exp(log_term - top)
        # scipy's stop rule: the remaining terms cannot move the sum by more than ε/4 of it.
        if j != n_terms - 1 and math.log(n_terms - j) + log_term < log_eps_quarter + top + math.log(scaled):
            break
    return math.exp(math.log(x) + top + math.log(scaled))


_smirnov_sf: Any = njit(cache=True, nogil=True)(_smirnov_sf_py)


def _twice_smirnov_many_py(n: npt.NDArray[np.int64], x: FloatArray) -> FloatArray:
    out = np.empty(x.shape[0], dtype=np.float64)
    for i in prange(x.shape[0]):
        out[i] = min(max(2.0 * _smirnov_sf(n[i], x[i]), 0.0), 1.0)
    return out


_twice_smirnov_many: Any = njit(cache=True, parallel=True)(_twice_smirnov_many_py)


def smirnov_sf(n: int, x: float) -> float:
    """``scipy.special.smirnov(n, x)`` on the range handled here (``1 < n·x``, ``x < 0.5``,
    ``141 <= n <= 10⁶``); outside it, scipy's own value."""
    if not (_KSTWO_SMALL_N < n <= _SMIRNOV_MAX_EXACT_N and n * x > 1.0 and x < 0.5):
        return float(special.smirnov(n, x))
    return float(_smirnov_sf(n, x))


def kstwo_sf(d: FloatArray, n: FloatArray) -> FloatArray:
    """``scipy.stats.kstwo.sf(d, n)`` elementwise for integral ``n >= 1`` (see the module doc)."""
    d = np.asarray(d, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    nxx = n * d * d
    fast = (
        (n > _KSTWO_SMALL_N)
        & (n <= _SMIRNOV_MAX_EXACT_N)
        & (n * d > 1.0)
        & (n * d < n - 1)
        & (d < 0.5)
        & (nxx >= _KSTWO_SMIRNOV_MIN_NXX)
        & (nxx < _KSTWO_ZERO_NXX)
    )
    out = np.empty(d.shape, dtype=np.float64)
    chosen = np.flatnonzero(fast)
    if chosen.shape[0]:
        with PARALLEL_LAUNCH:
            out[chosen] = _twice_smirnov_many(n[chosen].astype(np.int64), d[chosen])
    rest = ~fast
    if np.any(rest):
        out[rest] = stats.kstwo.sf(d[rest], n[rest])
    return out
