"""Drift of a categorical feature: chi-squared test of homogeneity and the L∞ distance of frequencies.

Categories are integer codes ``0 … n_categories − 1``; a negative code means missing (counted, never
scored). Both tests work on count vectors, so reference counts from a profile merge by addition.

**Chi-squared (homogeneity, 2 × k).** Rows are the two samples, columns the categories that occur in at
least one of them (a category absent from both has no expected count and is dropped). Expected count
``E[s, c] = row_total[s] · column_total[c] / grand_total``; ``χ² = Σ (O − E)² / E``, degrees of freedom
``k − 1``, ``p = chi2.sf(χ², k − 1)``. No Yates continuity correction. This equals
``scipy.stats.chi2_contingency([ref_counts, cur_counts], correction=False)`` on the non-empty columns.
It treats the reference as a sample too (unlike a goodness-of-fit test against fixed reference
proportions), so a small reference does not inflate the statistic. One category only → χ² = 0, p = 1.

**L∞.** ``max_c |p_cur[c] − p_ref[c]|`` with ``p = count / total`` over the union of categories; in
``[0, 1]``.

Too few counted values (below ``min_samples`` in either sample) → ``insufficient = True`` and NaN
scores, never a drift score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

IntArray = npt.NDArray[np.int64]

DEFAULT_MIN_SAMPLES = 30


@dataclass(frozen=True)
class CategoricalDrift:
    """Categorical drift scores for one feature; scores are NaN exactly when ``insufficient``."""

    chi2_statistic: float
    chi2_pvalue: float
    degrees_of_freedom: int
    linf: float
    n_reference: int
    n_current: int
    missing_reference: int
    missing_current: int
    insufficient: bool


def category_counts(codes: npt.ArrayLike, n_categories: int) -> tuple[IntArray, int]:
    """``(counts per category, missing count)``; negative codes are missing. Codes ≥ ``n_categories``
    are an error (an unknown category must be mapped to a code by the caller, not dropped here)."""
    values = np.asarray(codes).ravel()
    if values.size and not np.issubdtype(values.dtype, np.integer):
        raise TypeError(f"category codes must be integers, got {values.dtype}")
    values = values.astype(np.int64, copy=False)
    missing = values < 0
    present = values[~missing]
    if present.size and int(present.max()) >= n_categories:
        raise ValueError(f"category code {int(present.max())} is out of range for {n_categories} categories")
    return np.bincount(present, minlength=n_categories).astype(np.int64), int(np.count_nonzero(missing))


def chi_squared_homogeneity(
    reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike
) -> tuple[float, float, int]:
    """``(χ², p, dof)`` of the 2 × k homogeneity test described in the module doc."""
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    _check_pair(ref, cur)
    occupied = (ref + cur) > 0
    observed = np.stack([ref[occupied], cur[occupied]])
    dof = int(observed.shape[1]) - 1
    if dof <= 0:
        return 0.0, 1.0, 0
    expected = observed.sum(axis=1, keepdims=True) * observed.sum(axis=0, keepdims=True) / observed.sum()
    statistic = float(np.sum((observed - expected) ** 2 / expected))
    return statistic, float(stats.chi2.sf(statistic, dof)), dof


def linf_distance(reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike) -> float:
    """``max_c |p_cur[c] − p_ref[c]|`` of the two frequency vectors."""
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    _check_pair(ref, cur)
    return float(np.max(np.abs(cur / cur.sum() - ref / ref.sum())))


def categorical_drift(
    reference_counts: npt.ArrayLike,
    current_counts: npt.ArrayLike,
    missing_reference: int = 0,
    missing_current: int = 0,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> CategoricalDrift:
    """Both categorical scores, or an insufficient-data result when either sample has fewer than
    ``min_samples`` counted (non-missing) values."""
    ref = np.asarray(reference_counts, dtype=np.int64)
    cur = np.asarray(current_counts, dtype=np.int64)
    n_ref = int(ref.sum())
    n_cur = int(cur.sum())
    if n_ref < max(min_samples, 1) or n_cur < max(min_samples, 1):
        return CategoricalDrift(
            chi2_statistic=np.nan,
            chi2_pvalue=np.nan,
            degrees_of_freedom=0,
            linf=np.nan,
            n_reference=n_ref,
            n_current=n_cur,
            missing_reference=missing_reference,
            missing_current=missing_current,
            insufficient=True,
        )
    statistic, pvalue, dof = chi_squared_homogeneity(ref, cur)
    return CategoricalDrift(
        chi2_statistic=statistic,
        chi2_pvalue=pvalue,
        degrees_of_freedom=dof,
        linf=linf_distance(ref, cur),
        n_reference=n_ref,
        n_current=n_cur,
        missing_reference=missing_reference,
        missing_current=missing_current,
        insufficient=False,
    )


def _check_pair(ref: npt.NDArray[np.float64], cur: npt.NDArray[np.float64]) -> None:
    if ref.ndim != 1 or ref.shape != cur.shape:
        raise ValueError(f"count vectors must be 1-D and aligned, got {ref.shape} and {cur.shape}")
    if np.any(ref < 0) or np.any(cur < 0):
        raise ValueError("counts must be non-negative")
    if ref.sum() <= 0 or cur.sum() <= 0:
        raise ValueError("each sample needs at least one counted value")
