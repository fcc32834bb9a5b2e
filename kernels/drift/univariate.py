"""One-feature entry points on clean samples: PSI, Jensen–Shannon and normalised Wasserstein.

These take two 1-D samples of finite values and raise on NaN/±∞ or an empty sample; the batched
:func:`kernels.drift.drift_scores` is the one that counts and excludes missing values and flags
insufficient data. Conventions are those of :mod:`kernels.drift.binning` and :mod:`kernels.drift.scores`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from kernels.drift.binning import (
    DEFAULT_N_BINS,
    DEFAULT_PSI_EPS,
    counts_from_sorted,
    jensen_shannon_from_counts,
    psi_from_counts,
    quantile_edges,
)
from kernels.drift.ecdf_walk import ks_and_area
from kernels.drift.scaled import normalised_wasserstein_scaled

FloatArray = npt.NDArray[np.float64]


def psi(
    reference: npt.ArrayLike,
    current: npt.ArrayLike,
    n_bins: int = DEFAULT_N_BINS,
    eps: float = DEFAULT_PSI_EPS,
) -> float:
    """Population stability index of ``current`` against ``reference`` (reference quantile bins)."""
    ref_counts, cur_counts = _binned(reference, current, n_bins)
    return float(psi_from_counts(ref_counts, cur_counts, eps))


def jensen_shannon(reference: npt.ArrayLike, current: npt.ArrayLike, n_bins: int = DEFAULT_N_BINS) -> float:
    """Jensen–Shannon divergence (base 2, in [0, 1]) on the reference quantile bins."""
    ref_counts, cur_counts = _binned(reference, current, n_bins)
    return float(jensen_shannon_from_counts(ref_counts, cur_counts))


def wasserstein_normalised(reference: npt.ArrayLike, current: npt.ArrayLike) -> float:
    """``wasserstein_distance(reference, current) / std(reference)`` (population std); a constant
    reference gives 0 if the current sample equals it and ``+∞`` otherwise. Finite for finite samples
    (huge values are scaled first: :mod:`kernels.drift.scaled`)."""
    ref = _clean_sorted(reference)
    cur = _clean_sorted(current)
    _, area = ks_and_area(ref, cur)
    with np.errstate(over="ignore", invalid="ignore"):
        std = float(np.std(ref))
    if not (np.isfinite(area) and np.isfinite(std)):  # huge values overflowed: scale them
        return normalised_wasserstein_scaled(ref, cur)
    if std > 0.0:
        return area / std
    return 0.0 if area == 0.0 else float("inf")


def _binned(
    reference: npt.ArrayLike, current: npt.ArrayLike, n_bins: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    ref = _clean_sorted(reference)
    cur = _clean_sorted(current)
    edges = quantile_edges(ref, n_bins)
    return counts_from_sorted(ref, edges), counts_from_sorted(cur, edges)


def _clean_sorted(sample: npt.ArrayLike) -> FloatArray:
    values = np.sort(np.asarray(sample, dtype=np.float64).ravel())
    if values.shape[0] == 0:
        raise ValueError("a drift score needs a non-empty sample")
    if not np.all(np.isfinite(values)):
        raise ValueError("values must be finite; use drift_scores to count and exclude NaN/inf")
    return values
