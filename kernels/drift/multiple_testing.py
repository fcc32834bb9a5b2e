"""Multiple-testing correction for per-feature p-values.

With 100 features tested at p < 0.05 about 5 unshifted features are flagged by chance; correcting the
p-values for the family keeps false alarms in check. NaN p-values (features with insufficient data)
are not tests: they are left out of the family size ``m`` and stay NaN.

* **Bonferroni** (controls the family-wise error rate): ``p_adj = min(1, m · p)``.
* **Benjamini–Hochberg** (controls the false discovery rate, independent or positively dependent
  tests): with the p-values sorted ascending ``p_(1) ≤ … ≤ p_(m)``,
  ``p_adj_(i) = min(1, min_{j ≥ i} m · p_(j) / j)``; equal to
  ``scipy.stats.false_discovery_control(p, method="bh")``.

A feature is flagged when its adjusted p-value is below alpha.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Correction = Literal["benjamini-hochberg", "bonferroni", "none"]


def bonferroni(pvalues: npt.ArrayLike) -> FloatArray:
    """Bonferroni-adjusted p-values (NaN kept, not counted in ``m``)."""
    p = _as_pvalues(pvalues)
    tested = ~np.isnan(p)
    out = p.copy()
    out[tested] = np.minimum(1.0, p[tested] * np.count_nonzero(tested))
    return out


def benjamini_hochberg(pvalues: npt.ArrayLike) -> FloatArray:
    """Benjamini–Hochberg adjusted p-values (NaN kept, not counted in ``m``)."""
    p = _as_pvalues(pvalues)
    tested = np.flatnonzero(~np.isnan(p))
    out = p.copy()
    m = tested.shape[0]
    if m == 0:
        return out
    order = np.argsort(p[tested], kind="stable")
    ranked = p[tested][order] * m / np.arange(1, m + 1)
    # Step-up: each adjusted value is the smallest scaled value at its rank or above.
    adjusted = np.minimum(1.0, np.minimum.accumulate(ranked[::-1])[::-1])
    out[tested[order]] = adjusted
    return out


def adjust_pvalues(pvalues: npt.ArrayLike, correction: Correction = "benjamini-hochberg") -> FloatArray:
    """Adjusted p-values for the named correction (``"none"`` returns a copy)."""
    if correction == "benjamini-hochberg":
        return benjamini_hochberg(pvalues)
    if correction == "bonferroni":
        return bonferroni(pvalues)
    if correction == "none":
        return _as_pvalues(pvalues).copy()
    raise ValueError(f"unknown correction {correction!r}")


def rejected(
    pvalues: npt.ArrayLike, alpha: float = 0.05, correction: Correction = "benjamini-hochberg"
) -> npt.NDArray[np.bool_]:
    """Features whose adjusted p-value is below ``alpha`` (NaN → never rejected)."""
    adjusted = adjust_pvalues(pvalues, correction)
    with np.errstate(invalid="ignore"):
        return np.asarray(adjusted < alpha, dtype=np.bool_)


def _as_pvalues(pvalues: npt.ArrayLike) -> FloatArray:
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p-values must be 1-D, got shape {p.shape}")
    finite = p[~np.isnan(p)]
    if np.any((finite < 0.0) | (finite > 1.0)):
        raise ValueError("p-values must lie in [0, 1]")
    return p
