"""Quantile bins from the reference, bin counts, and the two binned scores: PSI and Jensen–Shannon.

Conventions (the written formulas the tests check against):

* **Bins.** ``n_bins`` (default 10) quantile bins of the *finite* reference values:
  ``q = numpy.quantile(ref, linspace(0, 1, n_bins + 1))`` (numpy's default ``linear`` method). The
  outer quantiles (min and max) are dropped and replaced by ±∞, so a current value outside the
  reference range still lands in the first or last bin. The interior edges ``q[1:-1]`` are
  de-duplicated (``numpy.unique``): when a point mass makes several quantiles equal (ties), they
  collapse into one edge. Bins are closed on the left: value ``x`` falls in bin
  ``i = searchsorted(edges, x, side="right")``, i.e. the bins are ``(-∞, e₁), [e₁, e₂), …, [e_k, +∞)``.
* **Point masses.** A value ``v`` that two consecutive quantiles ``q[i] = q[i+1]`` land on, at least
  one of them interior (a 0/1 flag, a feature constant in training, a value capped at its max or
  floored at its min), also gets the edge ``nextafter(v, +∞)``, the next float above it: its bin is
  ``[v, nextafter(v)) = {v}`` exactly. Without it the bin of ``v`` ran on to the next edge — to ``+∞``
  when ``v`` is the last one — so mass moving *up* off ``v`` stayed in the bin and PSI and JSD could not
  see it (a move down was always seen: ``v`` is the left edge of its bin). A value holding at least
  ``2 (N − 1) / n_bins + 3`` of the ``N`` finite reference values always gets one; one holding between
  one and two quantile steps may. A feature gets at most ``n_bins + 1`` edges (:func:`edge_capacity`):
  a repeated interior quantile pays for its extra edge with the slot it shares, and only the masses at
  the min and the max can be repeated through an outer quantile alone.
* **Few values.** A reference of at most ``edge_capacity(n_bins) // 2`` distinct finite values (5 for
  10 bins: a 0/1 flag, a categorical code of a few levels, a constant) is binned by value instead: the
  edges are every value ``v`` and ``nextafter(v, +∞)``, so each value is a bin of its own, ``{v}``, and
  so is each gap between, below and above them. On quantile bins two values holding under two quantile
  steps each could share a bin (say codes 2 and 3 of ``[30 %, 30 %, 5 %, 5 %, 30 %]``), and 5 % of the
  rows moving from one code to the other read PSI 0 and JSD 0. More values than that are binned by
  quantile as above; two rare values may still share a bin there (KS sees the move).
* **Padding.** Features are processed together as ``[n_features, edge_capacity(n_bins)]`` edge arrays;
  a feature with fewer edges is padded with ``+∞``. A padded bin is empty in both samples, and an
  empty-in-both bin adds exactly 0 to PSI and to JSD, so padding never changes a score. (Profiles
  stored before point masses had bins are padded to ``n_bins − 1``: see
  :func:`kernels.drift.profile.with_point_mass_bins`.)
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


def edge_capacity(n_bins: int) -> int:
    """Most interior edges :func:`quantile_edges` returns for ``n_bins`` (see the module doc)."""
    return n_bins + 1


def quantile_edges(finite_values: FloatArray, n_bins: int = DEFAULT_N_BINS) -> FloatArray:
    """Interior bin edges (ascending, unique, at most ``edge_capacity(n_bins)``) from the reference
    quantiles, with a bin of its own for every point mass, or, for a reference of few distinct values,
    a bin for each value (see the module doc).

    ``finite_values`` must be non-empty and hold no NaN or ±∞ (sorted or not).

    Why at most ``n_bins + 1``: a value with ``k ≥ 2`` of the ``n_bins − 1`` interior quantiles takes 2
    edges for its ``k`` slots; one with a single interior quantile is a point mass only when its other
    quantile is the min (``q[0]``) or the max (``q[n_bins]``), so at most two edges come on top."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    if finite_values.shape[0] == 0:
        raise ValueError("quantile edges need at least one finite reference value")
    distinct = np.unique(finite_values)
    if few_values(distinct.shape[0], n_bins):
        # Few values (a flag, a categorical code): each its own bin, and each gap between them. On
        # quantile bins two values of under two quantile steps each could share a bin, and a move from
        # one to the other read PSI 0 and JSD 0.
        return _value_edges(distinct)
    return point_mass_edges(finite_values, n_bins)


def few_values(n_distinct: int, n_bins: int = DEFAULT_N_BINS) -> bool:
    """Whether a reference of ``n_distinct`` distinct finite values is binned by value (module doc)."""
    return 2 * n_distinct <= edge_capacity(n_bins)


def point_mass_edges(finite_values: FloatArray, n_bins: int = DEFAULT_N_BINS) -> FloatArray:
    """The quantile rule alone: interior quantiles and a bin for every point mass, whatever the number of
    distinct values (how every feature was binned before few-valued ones were binned by value)."""
    quantiles = np.quantile(finite_values, np.linspace(0.0, 1.0, n_bins + 1))
    interior = quantiles[1:-1]
    repeated = interior[(interior == quantiles[:-2]) | (interior == quantiles[2:])]
    above = np.nextafter(repeated, np.inf)
    # Above the largest float there is only +inf, and no finite value lies past it anyway.
    return np.unique(np.concatenate((interior, above[np.isfinite(above)]))).astype(np.float64)


def _value_edges(distinct: FloatArray) -> FloatArray:
    """``v`` and ``nextafter(v, +∞)`` of every value: ``[v, nextafter(v)) = {v}`` is a bin of its own."""
    above = np.nextafter(distinct, np.inf)
    return np.unique(np.concatenate((distinct, above[np.isfinite(above)]))).astype(np.float64)


def padded_edges(edges: FloatArray, n_bins: int) -> FloatArray:
    """``edges`` right-padded with ``+∞`` to length ``edge_capacity(n_bins)`` (see the module doc)."""
    out = np.full(edge_capacity(n_bins), np.inf)
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
