"""Reference profile: everything the drift scores need from the reference (training) data, built once.

Per feature it holds

* the quantile bin edges and the reference bin counts (PSI, JSD — see :mod:`kernels.drift.binning`);
* the **sorted finite reference sample**. KS and Wasserstein are exact only against the full empirical
  CDF of the reference, so the profile keeps every finite value, sorted once here; each scoring window
  then costs one linear merge per feature instead of a re-sort of the reference (1M values);
* ``count``, ``mean`` and ``m2`` (sum of squared deviations) for the reference standard deviation
  (population, ``ddof = 0``), which normalises Wasserstein (``m2`` is ``inf`` for values past ~1e154:
  the scorers then normalise on the sample scaled, :mod:`kernels.drift.scaled`);
* how many values were missing (NaN or ±∞), excluded from everything above.

**Merging** (:func:`merge_profiles`), e.g. a reference built from partitions of a training set: bin
counts, missing counts and sizes add; the sorted samples merge; mean and ``m2`` combine with Chan's
parallel formula. Bin edges are *frozen* at build time, so only profiles with identical edges merge —
build the parts with shared edges (``edges=`` of :func:`build_reference_profile`), or call
:func:`rebin` afterwards to recompute quantile edges from the merged sample.

**Precision** (:func:`at_precision`): a profile compared with values served as float32 must hold its
reference values rounded to float32 too, or a value float32 cannot hold exactly sits alone on a
point-mass bin the served value misses; a value past the dtype's range is missing, as in the window.

**Profiles binned before point masses had bins of their own** (edges padded to ``n_bins − 1``; see
:mod:`kernels.drift.binning`) still score exactly as they did: every function here takes edges of any
width. :func:`with_point_mass_bins` re-bins one the current way where that is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from kernels.drift.binning import (
    DEFAULT_N_BINS,
    counts_from_sorted,
    edge_capacity,
    padded_edges,
    point_mass_edges,
    quantile_edges,
)
from kernels.drift.ecdf_walk import finite_bounds, sort_rows

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class ReferenceProfile:
    """Reference summary of ``n_features`` numeric features (arrays are indexed by feature first).

    ``sorted_values[f, :n_valid[f]]`` is feature ``f``'s finite reference sample, ascending; the rest
    of the row is NaN padding. ``edges[f]`` holds the interior bin edges, ``+∞``-padded to
    ``edge_capacity(n_bins)`` (``n_bins − 1`` in a profile binned before point masses had bins);
    ``bin_counts[f]`` the reference counts of its ``edges.shape[1] + 1`` bins. ``n_bins`` is the number
    of quantile bins asked for."""

    n_bins: int
    edges: FloatArray
    bin_counts: IntArray
    sorted_values: FloatArray
    n_valid: IntArray
    n_missing: IntArray
    mean: FloatArray
    m2: FloatArray

    @property
    def n_features(self) -> int:
        return int(self.edges.shape[0])

    @property
    def std(self) -> FloatArray:
        """Population standard deviation per feature (NaN where no finite value)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(np.sqrt(self.m2 / self.n_valid), dtype=np.float64)


def build_reference_profile(
    reference: npt.ArrayLike, n_bins: int = DEFAULT_N_BINS, edges: FloatArray | None = None
) -> ReferenceProfile:
    """Profile of ``reference`` shaped ``[n_rows, n_features]`` (a 1-D array is one feature).

    ``edges`` (``[n_features, width]``, ascending, ``+∞``-padded; usually another profile's ``edges``)
    imposes bin edges instead of deriving them from this sample's quantiles — used to build mergeable
    partial profiles."""
    values = _as_table(reference)
    n_rows, n_features = values.shape
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    if edges is not None and (edges.ndim != 2 or edges.shape[0] != n_features):
        raise ValueError(f"edges must have shape ({n_features}, width), got {edges.shape}")
    rows = sort_rows(values, by_column=True)
    n_valid = np.zeros(n_features, dtype=np.int64)
    for f in range(n_features):
        lo, hi = finite_bounds(rows[f])
        n_valid[f] = hi - lo
        if lo > 0:  # -inf values sort first: move the finite run to the front of the row
            rows[f, : hi - lo] = rows[f, lo:hi].copy()
        rows[f, hi - lo :] = np.nan
    sorted_values = np.ascontiguousarray(rows[:, : int(n_valid.max(initial=0))])
    return _summarise(sorted_values, n_valid, n_rows - n_valid, n_bins, edges)


def merge_profiles(first: ReferenceProfile, second: ReferenceProfile) -> ReferenceProfile:
    """The profile of the two reference samples taken together (same features, same edges)."""
    if first.n_bins != second.n_bins or first.n_features != second.n_features:
        raise ValueError("profiles must have the same features and number of bins to merge")
    if not np.array_equal(first.edges, second.edges):
        raise ValueError("profiles have different bin edges; build them with shared edges or rebin after")
    n_valid = first.n_valid + second.n_valid
    sorted_values = np.full((first.n_features, int(n_valid.max(initial=0))), np.nan)
    for f in range(first.n_features):
        joined = np.concatenate(
            (first.sorted_values[f, : first.n_valid[f]], second.sorted_values[f, : second.n_valid[f]])
        )
        # Two ascending runs: a stable (merge-based) sort finds them and merges in linear time.
        sorted_values[f, : n_valid[f]] = np.sort(joined, kind="stable")
    # Chan et al.: combine (count, mean, m2) of two parts without revisiting the values.
    n_a = first.n_valid.astype(np.float64)
    n_b = second.n_valid.astype(np.float64)
    total = n_a + n_b
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = second.mean - first.mean
        mean = np.where(
            n_b == 0, first.mean, np.where(n_a == 0, second.mean, first.mean + delta * n_b / total)
        )
        m2 = np.where(
            (n_a == 0) | (n_b == 0),
            np.nan_to_num(first.m2) + np.nan_to_num(second.m2),
            first.m2 + second.m2 + delta * delta * n_a * n_b / total,
        )
    m2 = np.where(total == 0, np.nan, m2)
    return ReferenceProfile(
        n_bins=first.n_bins,
        edges=first.edges.copy(),
        bin_counts=first.bin_counts + second.bin_counts,
        sorted_values=sorted_values,
        n_valid=n_valid,
        n_missing=first.n_missing + second.n_missing,
        mean=np.asarray(mean, dtype=np.float64),
        m2=np.asarray(m2, dtype=np.float64),
    )


def select_features(profile: ReferenceProfile, features: npt.ArrayLike) -> ReferenceProfile:
    """The profile of the given features (indices, in that order) alone: each one's bins, sample and
    counts as they are, the sorted sample trimmed to the longest kept."""
    index = np.asarray(features, dtype=np.intp).reshape(-1)
    n_valid = profile.n_valid[index]
    return ReferenceProfile(
        n_bins=profile.n_bins,
        edges=profile.edges[index],
        bin_counts=profile.bin_counts[index],
        sorted_values=np.ascontiguousarray(profile.sorted_values[index, : int(n_valid.max(initial=0))]),
        n_valid=n_valid,
        n_missing=profile.n_missing[index],
        mean=profile.mean[index],
        m2=profile.m2[index],
    )


def rebin(profile: ReferenceProfile, n_bins: int = DEFAULT_N_BINS) -> ReferenceProfile:
    """The same profile with quantile edges and counts recomputed from its (merged) sorted sample."""
    return _summarise(profile.sorted_values, profile.n_valid, profile.n_missing, n_bins, None)


def with_point_mass_bins(profile: ReferenceProfile) -> ReferenceProfile | None:
    """A profile binned before point masses had bins of their own, re-binned the current way — or
    ``None`` when that cannot be done exactly, and ``profile`` itself when it needs nothing. (One binned
    after that but before features of few distinct values were binned by value is re-binned too where
    that is exact, its sample complete and its edges ours; else it keeps its bins and is returned as
    it is.)

    Such a profile is told by its edge width, ``n_bins − 1``. Its bins can be recomputed only from the
    whole reference: when its sorted sample is complete (not compacted: every finite value binned is
    kept) and its edges are the quantile edges the old rule derives from that sample (not edges imposed
    by the caller), :func:`rebin` gives exactly the profile a build from the same data gives today. A
    compacted one keeps only order statistics, which cannot tell how many values sat exactly on a mass:
    it keeps its old bins (``None``), and so its blindness to a move up off a point mass."""
    if profile.edges.shape[1] != profile.n_bins - 1:
        return _with_value_bins(profile)
    if not np.array_equal(profile.bin_counts.sum(axis=1), profile.n_valid):
        return None  # compacted
    for f in range(profile.n_features):
        finite = profile.sorted_values[f, : profile.n_valid[f]]
        legacy = np.full(profile.n_bins - 1, np.inf)
        if finite.shape[0]:
            interior = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, profile.n_bins + 1))[1:-1])
            legacy[: interior.shape[0]] = interior
        if not np.array_equal(profile.edges[f], legacy):
            return None  # imposed edges: not ours to replace
    return rebin(profile, profile.n_bins)


def _with_value_bins(profile: ReferenceProfile) -> ReferenceProfile:
    """A profile binned before features of few distinct values were binned by value (each value a bin:
    :mod:`kernels.drift.binning`), re-binned the current way where that is exact: its sample complete and
    every feature's edges those a rule of ours derives from it (the current one, or the quantile rule
    alone), so that no edge a caller imposed is replaced. Else, and when nothing is stale, ``profile``."""
    if not np.array_equal(profile.bin_counts.sum(axis=1), profile.n_valid):
        return profile  # compacted: its bins cannot be recounted
    stale = False
    for f in range(profile.n_features):
        finite = profile.sorted_values[f, : profile.n_valid[f]]
        if not finite.shape[0]:
            continue
        current = padded_edges(quantile_edges(finite, profile.n_bins), profile.n_bins)
        if np.array_equal(profile.edges[f], current):
            continue
        quantile_only = padded_edges(point_mass_edges(finite, profile.n_bins), profile.n_bins)
        if not np.array_equal(profile.edges[f], quantile_only):
            return profile  # imposed edges: not ours to replace
        stale = True
    return rebin(profile, profile.n_bins) if stale else profile


def at_precision(profile: ReferenceProfile, dtype: npt.DTypeLike) -> ReferenceProfile:
    """The profile of the same reference values rounded to ``dtype`` (``float32``, ``float16``): what a
    model served in that precision is fed, and what its prediction log holds. ``profile`` itself when
    ``dtype`` is no narrower float than float64 or its sample is already exact in ``dtype``.

    Why: a reference built in float64 puts a value float32 cannot hold exactly (0.1, 0.3, 2.7) on a
    point mass of its own, ``[v, nextafter(v))``; the same value served as float32 is ``float32(v) ≠ v``
    and lands in the next bin, so PSI, JSD and KS read identical distributions as wholly drifted. Compare
    the window rounded the same way (:func:`round_to`).

    A complete sample (every binned value kept: not compacted) is rebuilt exactly as if profiled from
    the rounded values: fresh quantile bins, or the profile's own edges rounded where they were imposed.
    A compacted one cannot be rebuilt: its sample and edges are rounded (two edges that round together
    stay apart by one step of ``dtype``, so a point mass keeps a bin of its own), its bins recounted on its
    rounded sample, each order statistic standing for its share of the reference (:func:`_recounted`;
    kept as counted in float64, they no longer matched the rounded edges, and a coarse dtype such as
    float16 read unchanged traffic as drift), its mean and spread kept (they move by about one rounding
    step).

    One rule for a value past ``dtype``'s range (float16: from 65520 up), as the window has it (rounded
    to ``±∞`` by :func:`round_to`, and so missing): missing here too. A complete sample's rebuild counts
    it missing; a compacted one's order statistics that round past the range are dropped from its sample
    and their share of the reference moves from its bins to its missing count (within one order
    statistic's spacing at each end of the sample), its mean and spread then taken from the sample it
    keeps. It kept them at their float64 value, in its bins and sample, so a float16 window of the very
    reference read as drift (PSI ≈ 1.4 with a fifth of it past the range)."""
    target = np.dtype(dtype)
    if target.kind != "f" or target.itemsize >= 8:
        return profile
    rounded = round_to(profile.sorted_values, target)
    if np.array_equal(rounded, profile.sorted_values, equal_nan=True):
        return profile
    if np.array_equal(profile.bin_counts.sum(axis=1), profile.n_valid):
        edges = None if _quantile_binned(profile) else _rounded_edges(profile.edges, target)
        n_rows = int(profile.n_valid.max(initial=0) + profile.n_missing.max(initial=0))
        table = np.full((n_rows, profile.n_features), np.nan)
        for f in range(profile.n_features):
            table[: profile.n_valid[f], f] = rounded[f, : profile.n_valid[f]]
        rebuilt = build_reference_profile(table, profile.n_bins, edges)
        n_missing = profile.n_missing + (rebuilt.n_missing - (n_rows - profile.n_valid))
        return ReferenceProfile(
            n_bins=rebuilt.n_bins,
            edges=rebuilt.edges,
            bin_counts=rebuilt.bin_counts,
            sorted_values=rebuilt.sorted_values,
            n_valid=rebuilt.n_valid,
            n_missing=n_missing.astype(np.int64),
            mean=rebuilt.mean,
            m2=rebuilt.m2,
        )
    # Compacted: its order statistics that round past the dtype's range are missing, as the window's
    # values that do (round_to makes them ±∞); each stood for its share of the reference's values.
    kept, n_valid, n_outside = _within_range(rounded, profile.n_valid)
    edges = _rounded_edges(profile.edges, target)
    bin_counts, moved = _recounted(kept, n_valid, n_outside, edges, profile.bin_counts)
    mean, m2 = profile.mean.copy(), profile.m2.copy()
    for cut in np.flatnonzero(n_outside):
        # The float64 mean and spread were of every value, those now missing too (far out, they dominate
        # both): taken from the kept sample instead, consistent with n_valid (std = sqrt(m2 / n_valid)).
        mean[cut], m2[cut] = _moments(kept[cut, : n_valid[cut]])
    return ReferenceProfile(
        n_bins=profile.n_bins,
        edges=edges,
        bin_counts=bin_counts,
        sorted_values=kept,
        n_valid=n_valid,
        n_missing=profile.n_missing + moved,
        mean=mean,
        m2=m2,
    )


def _moments(finite: FloatArray) -> tuple[float, float]:
    """``(mean, m2)`` of ``finite`` (NaN for none), as :func:`build_reference_profile` keeps them."""
    if not finite.size:
        return math.nan, math.nan
    mean = float(finite.mean())
    return mean, float(np.sum(np.square(finite - mean)))


def _within_range(rounded: FloatArray, n_valid: IntArray) -> tuple[FloatArray, IntArray, IntArray]:
    """``(sample, n_valid, n_outside)``: each feature's rounded sorted sample ``rounded[f, :n_valid[f]]``
    without its values rounded to ``±∞`` (they sort at its two ends), NaN-padded; how many it keeps; and
    how many it left out."""
    lows = np.array([np.count_nonzero(rounded[f, : n_valid[f]] == -np.inf) for f in range(len(n_valid))])
    highs = np.array([np.count_nonzero(rounded[f, : n_valid[f]] == np.inf) for f in range(len(n_valid))])
    n_outside = (lows + highs).astype(np.int64)
    n_kept = (n_valid - n_outside).astype(np.int64)
    if not n_outside.any():
        return rounded, n_valid, n_outside
    sample = np.full((len(n_valid), int(n_kept.max(initial=0))), np.nan)
    for f in range(len(n_valid)):
        sample[f, : n_kept[f]] = rounded[f, lows[f] : lows[f] + n_kept[f]]
    return sample, n_kept, n_outside


def _recounted(
    sample: FloatArray, n_kept: IntArray, n_outside: IntArray, edges: FloatArray, counts: IntArray
) -> tuple[IntArray, IntArray]:
    """A compacted profile's bin counts recounted on its rounded sample of evenly spaced order statistics
    (``sample[f, :n_kept[f]]``, ascending, and ``n_outside[f]`` more that rounded past the dtype's range),
    each standing for an equal share of the reference's values: per feature, the counts of ``sample`` in
    ``edges``' bins and the count outside, scaled to the total of ``counts`` (the reference's finite
    values), rounded by largest remainder so that the total stays exact. Returns the bin counts and, per
    feature, the reference values now missing (outside the range).

    Kept as counted in float64, the counts no longer matched the rounded edges: where the dtype is coarse
    (float16 holds every other integer past 2048) the decile edges round onto a few representable values,
    the served values, rounded too, fill other bins than the counts say, and unchanged traffic read as
    drift (PSI ≈ 3). Each count is off by at most about one order statistic's share, ``total / n_kept``."""
    out = np.zeros_like(counts)
    missing = np.zeros(counts.shape[0], dtype=np.int64)
    for f in range(counts.shape[0]):
        total = int(counts[f].sum())
        stats = int(n_kept[f] + n_outside[f])
        if stats == 0 or total == 0:
            out[f] = counts[f]
            continue
        counted = np.append(counts_from_sorted(sample[f, : n_kept[f]], edges[f]), n_outside[f])
        exact = counted * (total / stats)
        whole = np.floor(exact).astype(np.int64)
        short = total - int(whole.sum())
        if short > 0:  # the largest remainders get the rows the floors left out
            whole[np.argsort(whole - exact, kind="stable")[:short]] += 1
        out[f], missing[f] = whole[:-1], whole[-1]
    return out, missing


def round_to(values: npt.ArrayLike, dtype: npt.DTypeLike) -> FloatArray:
    """``values`` rounded to ``dtype`` (to nearest; past its range to ``±∞``), back as float64."""
    with np.errstate(over="ignore"):
        return np.asarray(np.asarray(values).astype(dtype).astype(np.float64), dtype=np.float64)


def _quantile_binned(profile: ReferenceProfile) -> bool:
    """Whether every feature's edges are the quantile edges of its sample (not imposed, not legacy)."""
    if profile.edges.shape[1] != edge_capacity(profile.n_bins):
        return False
    for f in range(profile.n_features):
        finite = profile.sorted_values[f, : profile.n_valid[f]]
        expected = np.full(profile.edges.shape[1], np.inf)
        if finite.shape[0]:
            expected = padded_edges(quantile_edges(finite, profile.n_bins), profile.n_bins)
        if not np.array_equal(profile.edges[f], expected):
            return False
    return True


def _rounded_edges(edges: FloatArray, dtype: np.dtype[Any]) -> FloatArray:
    """Finite edges rounded to ``dtype``, each kept at least one ``dtype`` step above the one before (a
    point-mass bin ``[v, nextafter(v))`` becomes ``[v', nextafter(v'))`` of the rounded ``v'``)."""
    out = edges.copy()
    step_up = dtype.type(np.inf)
    for f in range(edges.shape[0]):
        previous = -np.inf
        for i in range(edges.shape[1]):
            edge = float(edges[f, i])
            if not np.isfinite(edge):
                continue
            value = float(round_to(edge, dtype))
            if not np.isfinite(value):
                value = edge
            if value <= previous:  # past the range (the step up from its largest value), +∞: a padding edge
                with np.errstate(over="ignore"):
                    value = float(np.nextafter(dtype.type(previous), step_up))
            out[f, i] = value
            previous = value
    return out


def _summarise(
    sorted_values: FloatArray, n_valid: IntArray, n_missing: IntArray, n_bins: int, edges: FloatArray | None
) -> ReferenceProfile:
    n_features = sorted_values.shape[0]
    width = edges.shape[1] if edges is not None else edge_capacity(n_bins)
    all_edges = np.full((n_features, width), np.inf)
    counts = np.zeros((n_features, width + 1), dtype=np.int64)
    mean = np.full(n_features, np.nan)
    m2 = np.full(n_features, np.nan)
    for f in range(n_features):
        finite = sorted_values[f, : n_valid[f]]
        if edges is not None:
            all_edges[f] = edges[f]
        elif finite.shape[0]:
            all_edges[f] = padded_edges(quantile_edges(finite, n_bins), n_bins)
        counts[f] = counts_from_sorted(finite, all_edges[f])
        if finite.shape[0]:
            # Past ~1e154 the squares (past ~1e306 the sum) overflow: m2 (or the mean) is then not finite,
            # and the scorers score Wasserstein on the sample scaled instead (kernels.drift.scaled).
            with np.errstate(over="ignore", invalid="ignore"):
                mean[f] = finite.mean()
                m2[f] = np.sum(np.square(finite - mean[f]))
    return ReferenceProfile(
        n_bins=n_bins,
        edges=all_edges,
        bin_counts=counts,
        sorted_values=sorted_values,
        n_valid=n_valid.astype(np.int64),
        n_missing=np.asarray(n_missing, dtype=np.int64),
        mean=mean,
        m2=m2,
    )


def _as_table(values: npt.ArrayLike) -> FloatArray:
    table = np.asarray(values, dtype=np.float64)
    if table.ndim == 1:
        table = table[:, np.newaxis]
    if table.ndim != 2:
        raise ValueError(f"expected [n_rows, n_features], got shape {table.shape}")
    return table
