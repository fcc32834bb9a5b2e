"""Batched drift scores: every numeric feature of a current window against its reference, in one pass.

Per feature ``f``:

* ``psi`` and ``jensen_shannon`` on the reference quantile bins (:mod:`kernels.drift.binning`);
* ``ks_statistic`` / ``ks_pvalue``: two-sided two-sample KS equal to ``scipy.stats.ks_2samp``
  (:mod:`kernels.drift.ks`), ``ks_exact`` saying which distribution gave the p-value;
* ``wasserstein``: Wasserstein-1 between the two empirical distributions divided by the reference
  population standard deviation (``scipy.stats.wasserstein_distance(ref, cur) / numpy.std(ref)``).
  A constant reference (std 0) gives 0 when the current window matches it exactly, else ``+∞``. Finite
  for finite values however large: a feature whose area or reference std overflowed is scored on both
  samples scaled by a power of two (:mod:`kernels.drift.scaled`);
* ``n_reference`` / ``n_current``: finite values used; ``missing_reference`` / ``missing_current``:
  NaN and ±∞ values, counted and excluded from every statistic;
* ``insufficient``: fewer than ``min_samples`` finite values in either sample (default 30). Such a
  feature gets **no score**: every score is NaN exactly where ``insufficient`` is true, so a consumer
  that checks the flag never reads a drift score off too little data.

Cost per window: the current window is sorted once per feature (threads, numpy), then one parallel
numba pass per feature merges it with the pre-sorted reference of the profile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kernels.drift.binning import DEFAULT_N_BINS, DEFAULT_PSI_EPS, jensen_shannon_from_counts, psi_from_counts
from kernels.drift.categorical import DEFAULT_MIN_SAMPLES
from kernels.drift.ecdf_walk import score_rows, sort_rows
from kernels.drift.ks import ks_pvalues
from kernels.drift.profile import ReferenceProfile, build_reference_profile
from kernels.drift.scaled import normalised_wasserstein_scaled

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class DriftScores:
    """Per-feature drift scores of one window (see the module doc for each field)."""

    psi: FloatArray
    jensen_shannon: FloatArray
    ks_statistic: FloatArray
    ks_pvalue: FloatArray
    ks_exact: BoolArray
    wasserstein: FloatArray
    n_reference: IntArray
    n_current: IntArray
    missing_reference: IntArray
    missing_current: IntArray
    insufficient: BoolArray
    current_bin_counts: IntArray

    @property
    def n_features(self) -> int:
        return int(self.psi.shape[0])


def drift_scores(
    reference: npt.ArrayLike | ReferenceProfile,
    current: npt.ArrayLike,
    *,
    n_bins: int = DEFAULT_N_BINS,
    psi_eps: float = DEFAULT_PSI_EPS,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> DriftScores:
    """Scores of ``current`` (``[n_cur, n_features]``) against ``reference``: either a raw
    ``[n_ref, n_features]`` array (profiled here with ``n_bins`` bins) or a prebuilt
    :class:`ReferenceProfile` (its own bins are used; build it once and reuse it across windows)."""
    if min_samples < 1:
        raise ValueError(f"min_samples must be at least 1, got {min_samples}")
    profile = (
        reference
        if isinstance(reference, ReferenceProfile)
        else build_reference_profile(reference, n_bins=n_bins)
    )
    window = np.asarray(current, dtype=np.float64)
    if window.ndim == 1 and profile.n_features == 1:
        window = window[:, np.newaxis]
    if window.ndim != 2 or window.shape[1] != profile.n_features:
        raise ValueError(f"current must be [n_rows, {profile.n_features}], got shape {window.shape}")

    cur_sorted = sort_rows(window, by_column=True)
    cur_lo, cur_hi, cur_counts, ks_d, area = score_rows(
        profile.sorted_values, profile.n_valid, cur_sorted, profile.edges, min_samples
    )
    n_current = cur_hi - cur_lo
    insufficient = (profile.n_valid < min_samples) | (n_current < min_samples)
    scored = ~insufficient

    psi = np.full(profile.n_features, np.nan)
    jsd = np.full(profile.n_features, np.nan)
    if np.any(scored):
        psi[scored] = psi_from_counts(profile.bin_counts[scored], cur_counts[scored], psi_eps)
        jsd[scored] = jensen_shannon_from_counts(profile.bin_counts[scored], cur_counts[scored])
    ks_statistic, ks_pvalue, ks_exact = ks_pvalues(ks_d, profile.n_valid, n_current)
    return DriftScores(
        psi=psi,
        jensen_shannon=jsd,
        ks_statistic=ks_statistic,
        ks_pvalue=ks_pvalue,
        ks_exact=ks_exact,
        wasserstein=_wasserstein(area, profile, cur_sorted, cur_lo, cur_hi, insufficient),
        n_reference=profile.n_valid.copy(),
        n_current=n_current,
        missing_reference=profile.n_missing.copy(),
        missing_current=window.shape[0] - n_current,
        insufficient=insufficient,
        current_bin_counts=cur_counts,
    )


def _wasserstein(
    area: FloatArray,
    profile: ReferenceProfile,
    cur_sorted: FloatArray,
    cur_lo: IntArray,
    cur_hi: IntArray,
    insufficient: BoolArray,
) -> FloatArray:
    """The area over the reference std, per feature; a scored feature whose area or std overflowed (huge
    values: the profile's ``m2`` past the float64 range) scored again on both samples scaled
    (:mod:`kernels.drift.scaled`; from the profile's sorted sample, compacted or not)."""
    std = profile.std
    out = normalise_by_std(area, std)
    for f in np.flatnonzero(~insufficient & ~(np.isfinite(area) & np.isfinite(std))):
        out[f] = normalised_wasserstein_scaled(
            profile.sorted_values[f, : profile.n_valid[f]], cur_sorted[f, cur_lo[f] : cur_hi[f]]
        )
    return out


def normalise_by_std(area: FloatArray, std: FloatArray) -> FloatArray:
    """Wasserstein area / reference std; a zero std gives 0 for a zero area and ``+∞`` otherwise."""
    out = np.full(area.shape, np.nan)
    defined = ~np.isnan(area)
    spread = defined & (std > 0)
    out[spread] = area[spread] / std[spread]
    constant = defined & (std == 0)
    out[constant] = np.where(area[constant] == 0.0, 0.0, np.inf)
    return out
