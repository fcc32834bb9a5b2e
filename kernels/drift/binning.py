"""Quantile bins from the reference, bin counts, and the two binned scores: PSI and Jensen–Shannon.

Conventions (the written formulas the tests check against):

* **Bins.** ``n_bins`` (default 10) quantile bins of the *finite* reference values:
  ``q = numpy.quantile(ref, linspace(0, 1, n_bins + 1))`` (numpy's default ``linear`` method). The
  outer quantiles (min and max) are dropped and replaced by ±∞, so a current value outside the
  reference range still lands in the first or last bin. The interior edges ``q[1:-1]`` are
  de-duplicated (``numpy.unique``): when a point mass makes several quantiles equal (ties), they
  collapse into one edge, so a feature may get *fewer* than ``n_bins`` bins. Bins are closed on the
  left: value ``x`` falls in bin ``i = searchsorted(edges, x, side="right")``, i.e. the bins are
  ``(-∞, e₁), [e₁, e₂), …, [e_k, +∞)``.
* **Padding.** Features are processed together as ``[n_features, n_bins - 1]`` edge arrays; a feature
  with fewer edges is padded with ``+∞``. A padded bin is empty in both samples, and an empty-in-both
  bin adds exactly 0 to PSI and to JSD, so padding never changes a score.
* **PSI.** ``p = count / total`` per sample, then each proportion is clipped from below:
  ``p = max(p, eps)`` with ``eps = 1e-4`` by default (no renormalisation afterwards), and
  ``PSI = Σ_bins (p_cur − p_ref) · ln(p_cur / p_ref)`` (natural log).
* **Jensen–Shannon.** On the same bins with the *unclipped* proportions ``p`` (reference) and ``q``
  (current), ``m = (p + q) / 2`` and ``JSD = ½ Σ p·log₂(p/m) + ½ Σ q·log₂(q/m)`` with ``0·log 0 = 0``.
  Base 2, so ``0 ≤ JSD ≤ 1``. This is the **divergence**; ``scipy.spatial.distance.jensenshannon``
  returns the *distance*, its square root.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DEFAULT_N_BINS = 10
DEFAULT_PSI_EPS = 1e-4


def quantile_edges(finite_values: FloatArray, n_bins: int = DEFAULT_N_BINS) -> FloatArray:
    """Interior bin edges (ascending, unique, at most ``n_bins - 1``) from the reference quantiles.

    ``finite_values`` must be non-empty and hold no NaN or ±∞ (sorted or not)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    if finite_values.shape[0] == 0:
        raise ValueError("quantile edges need at least one finite reference value")
    quantiles = np.quantile(finite_values, np.linspace(0.0, 1.0, n_bins + 1))
    return np.unique(quantiles[1:-1]).astype(np.float64)


def padded_edges(edges: FloatArray, n_bins: int) -> FloatArray:
    """``edges`` right-padded with ``+∞`` to length ``n_bins - 1`` (see the module doc: harmless)."""
    out = np.full(n_bins - 1, np.inf)
    out[: edges.shape[0]] = edges
    return out


def counts_from_sorted(sorted_finite: FloatArray, edges: FloatArray) -> IntArray:
    """Bin counts of an ascending sample of finite values, bins closed on the left.

    ``searchsorted(side="left")`` of edge ``e`` counts the values ``< e``; consecutive differences are
    the bins ``[e_{i-1}, e_i)``. One binary search per edge instead of one per value."""
    below = np.searchsorted(sorted_finite, edges, side="left").astype(np.int64)
    cumulative = np.concatenate(([0], below, [sorted_finite.shape[0]])).astype(np.int64)
    return np.diff(cumulative)


def psi_from_counts(
    reference_counts: npt.NDArray[np.integer] | FloatArray,
    current_counts: npt.NDArray[np.integer] | FloatArray,
    eps: float = DEFAULT_PSI_EPS,
) -> FloatArray:
    """PSI along the last axis (one value per feature for ``[n_features, n_bins]`` counts).

    Every row must have a positive total; rows are scored independently."""
    p_ref = np.maximum(_proportions(reference_counts), eps)
    p_cur = np.maximum(_proportions(current_counts), eps)
    return np.asarray(np.sum((p_cur - p_ref) * np.log(p_cur / p_ref), axis=-1), dtype=np.float64)


def jensen_shannon_from_counts(
    reference_counts: npt.NDArray[np.integer] | FloatArray,
    current_counts: npt.NDArray[np.integer] | FloatArray,
) -> FloatArray:
    """Jensen–Shannon divergence, base 2, along the last axis; in ``[0, 1]``."""
    p = _proportions(reference_counts)
    q = _proportions(current_counts)
    m = 0.5 * (p + q)
    # Where p == 0 the term is 0 (0·log 0 = 0); the masked division keeps 0/0 out of the sum.
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.where(p > 0.0, p * np.log2(p / m), 0.0)
        right = np.where(q > 0.0, q * np.log2(q / m), 0.0)
    jsd = 0.5 * np.sum(left, axis=-1) + 0.5 * np.sum(right, axis=-1)
    # Rounding can leave a value a few ulps outside the mathematical range.
    return np.asarray(np.clip(jsd, 0.0, 1.0), dtype=np.float64)


def _proportions(counts: npt.NDArray[np.integer] | FloatArray) -> FloatArray:
    as_float = np.asarray(counts, dtype=np.float64)
    totals = as_float.sum(axis=-1, keepdims=True)
    if np.any(totals <= 0.0):
        raise ValueError("every sample needs at least one counted value to form proportions")
    return np.asarray(as_float / totals, dtype=np.float64)
