"""Drift statistics for model monitoring: pure functions over numpy arrays (numba for the hot loops).

Numeric features: PSI and Jensen–Shannon on reference quantile bins, two-sample KS equal to
``scipy.stats.ks_2samp``, Wasserstein-1 normalised by the reference std — batched over all features by
:func:`drift_scores` against a mergeable :class:`ReferenceProfile`. Categorical features: chi-squared
homogeneity test and L∞ distance. Per-feature KS p-values are corrected with Benjamini–Hochberg or
Bonferroni. Each module's docstring writes down its exact conventions.
"""

from kernels.drift.binning import (
    DEFAULT_N_BINS,
    DEFAULT_PSI_EPS,
    counts_from_sorted,
    jensen_shannon_from_counts,
    psi_from_counts,
    quantile_edges,
)
from kernels.drift.categorical import (
    DEFAULT_MIN_SAMPLES,
    CategoricalDrift,
    categorical_drift,
    category_counts,
    chi_squared_homogeneity,
    linf_distance,
)
from kernels.drift.ks import EXACT_MAX_N, KsResult, ks_2samp, ks_pvalues
from kernels.drift.multiple_testing import (
    Correction,
    adjust_pvalues,
    benjamini_hochberg,
    bonferroni,
    rejected,
)
from kernels.drift.profile import (
    ReferenceProfile,
    at_precision,
    build_reference_profile,
    merge_profiles,
    rebin,
    round_to,
    select_features,
)
from kernels.drift.scores import DriftScores, drift_scores
from kernels.drift.univariate import jensen_shannon, psi, wasserstein_normalised

__all__ = [
    "DEFAULT_MIN_SAMPLES",
    "DEFAULT_N_BINS",
    "DEFAULT_PSI_EPS",
    "EXACT_MAX_N",
    "CategoricalDrift",
    "Correction",
    "DriftScores",
    "KsResult",
    "ReferenceProfile",
    "adjust_pvalues",
    "at_precision",
    "benjamini_hochberg",
    "bonferroni",
    "build_reference_profile",
    "categorical_drift",
    "category_counts",
    "chi_squared_homogeneity",
    "counts_from_sorted",
    "drift_scores",
    "jensen_shannon",
    "jensen_shannon_from_counts",
    "ks_2samp",
    "ks_pvalues",
    "linf_distance",
    "merge_profiles",
    "psi",
    "psi_from_counts",
    "quantile_edges",
    "rebin",
    "rejected",
    "round_to",
    "select_features",
    "wasserstein_normalised",
]
