"""The batched API: missing values counted and excluded, insufficient data flagged, no drift on the same
distribution, drift on a shifted one, mergeable reference profiles, multiple-testing correction."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.drift import (
    adjust_pvalues,
    benjamini_hochberg,
    bonferroni,
    build_reference_profile,
    drift_scores,
    merge_profiles,
    rebin,
    rejected,
)
from kernels.drift.scores import DriftScores


def score_arrays(scores: DriftScores) -> list[npt.NDArray[np.float64]]:
    return [scores.psi, scores.jensen_shannon, scores.ks_statistic, scores.ks_pvalue, scores.wasserstein]


def test_missing_values_are_counted_and_excluded_from_every_score() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(size=(3_000, 2))
    current = rng.normal(size=(800, 2))
    dirty_reference = reference.copy()
    dirty_reference[::10, 0] = np.nan
    dirty_reference[5, 0] = np.inf
    dirty_current = current.copy()
    dirty_current[:40, 1] = np.nan
    dirty_current[40, 1] = -np.inf
    scores = drift_scores(dirty_reference, dirty_current)
    assert scores.missing_reference.tolist() == [301, 0]
    assert scores.missing_current.tolist() == [0, 41]
    assert scores.n_reference.tolist() == [2_699, 3_000]
    assert scores.n_current.tolist() == [800, 759]
    clean = drift_scores(
        dirty_reference[np.isfinite(dirty_reference[:, 0]), :1], dirty_current[:, :1]
    )  # feature 0 with the missing rows dropped by hand
    assert scores.psi[0] == clean.psi[0]
    assert scores.ks_pvalue[0] == clean.ks_pvalue[0]
    assert scores.wasserstein[0] == pytest.approx(clean.wasserstein[0], rel=1e-12)
    for values in score_arrays(scores):
        assert np.all(np.isfinite(values))
    kept = np.isfinite(dirty_current[:, 1])
    theirs = scipy.stats.ks_2samp(reference[:, 1], dirty_current[kept, 1])
    assert scores.ks_statistic[1] == theirs.statistic


def test_too_few_values_is_flagged_and_never_scored() -> None:
    rng = np.random.default_rng(2)
    reference = rng.normal(size=(1_000, 3))
    reference[20:, 2] = np.nan  # only 20 finite reference values for feature 2
    current = rng.normal(size=(100, 3)) + 5.0  # a huge shift: any score would scream drift
    current[25:, 1] = np.nan  # only 25 finite current values for feature 1
    scores = drift_scores(reference, current, min_samples=30)
    assert scores.insufficient.tolist() == [False, True, True]
    for values in score_arrays(scores):
        assert np.isnan(values[1:]).all() and not np.isnan(values[0])
    assert scores.n_current[1] == 25 and scores.missing_current[1] == 75
    assert scores.n_reference[2] == 20 and scores.missing_reference[2] == 980
    assert not rejected(scores.ks_pvalue)[1:].any()
    lenient = drift_scores(reference, current, min_samples=20)
    assert lenient.insufficient.tolist() == [False, False, False]


def test_all_missing_feature_is_insufficient() -> None:
    reference = np.full((100, 1), np.nan)
    scores = drift_scores(reference, np.zeros((50, 1)))
    assert scores.insufficient[0] and np.isnan(scores.psi[0])
    assert scores.missing_reference[0] == 100


def test_same_distribution_scores_near_zero_and_a_shift_is_detected() -> None:
    rng = np.random.default_rng(3)
    n_features = 40
    reference = rng.normal(size=(20_000, n_features))
    current = rng.normal(size=(5_000, n_features))
    current[:, :5] += 0.3
    scores = drift_scores(reference, current)
    same, shifted = slice(5, None), slice(0, 5)
    assert np.all(scores.psi[same] < 0.02) and np.all(scores.psi[shifted] > 0.05)
    assert np.all(scores.jensen_shannon[same] < 0.01) and np.all(scores.jensen_shannon[shifted] > 0.01)
    assert np.all(scores.wasserstein[same] < 0.05) and np.all(scores.wasserstein[shifted] > 0.2)
    assert np.all(scores.ks_pvalue[shifted] < 1e-10)
    assert np.median(scores.ks_pvalue[same]) > 0.1
    flagged = rejected(scores.ks_pvalue, alpha=0.05, correction="benjamini-hochberg")
    assert flagged[shifted].all() and not flagged[same].any()
    itself = drift_scores(reference[:, :3], reference[:, :3])
    assert np.all(itself.psi == 0.0) and np.all(itself.jensen_shannon == 0.0)
    assert np.all(itself.ks_statistic == 0.0) and np.all(itself.ks_pvalue == 1.0)


def test_merged_profiles_equal_the_profile_of_the_whole() -> None:
    rng = np.random.default_rng(4)
    whole = np.round(rng.normal(size=(6_000, 3)), 2)
    whole[::17, 1] = np.nan
    full = build_reference_profile(whole)
    first = build_reference_profile(whole[:2_500], edges=full.edges)
    second = build_reference_profile(whole[2_500:], edges=full.edges)
    merged = merge_profiles(first, second)
    np.testing.assert_array_equal(merged.bin_counts, full.bin_counts)
    np.testing.assert_array_equal(merged.n_valid, full.n_valid)
    np.testing.assert_array_equal(merged.n_missing, full.n_missing)
    np.testing.assert_array_equal(merged.sorted_values, full.sorted_values)
    np.testing.assert_allclose(merged.std, np.nanstd(whole, axis=0), rtol=1e-12)
    current = rng.normal(size=(500, 3))
    a, b = drift_scores(merged, current), drift_scores(full, current)
    np.testing.assert_array_equal(a.ks_pvalue, b.ks_pvalue)
    np.testing.assert_array_equal(a.psi, b.psi)
    with pytest.raises(ValueError, match="edges"):
        merge_profiles(build_reference_profile(whole[:2_500]), build_reference_profile(whole[2_500:]))
    rebinned = rebin(merge_profiles(first, second))
    np.testing.assert_array_equal(rebinned.edges, full.edges)


def test_current_must_match_the_reference_features() -> None:
    with pytest.raises(ValueError, match="current must be"):
        drift_scores(np.zeros((100, 3)), np.zeros((100, 2)))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(0.0, 1.0) | st.just(float("nan")), min_size=1, max_size=40))
def test_corrections_match_scipy_and_their_definitions(values: list[float]) -> None:
    p = np.array(values)
    tested = ~np.isnan(p)
    bh = benjamini_hochberg(p)
    bonf = bonferroni(p)
    assert np.array_equal(np.isnan(bh), ~tested) and np.array_equal(np.isnan(bonf), ~tested)
    if tested.any():
        expected_bh = scipy.stats.false_discovery_control(p[tested], method="bh")
        np.testing.assert_allclose(bh[tested], expected_bh, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(bonf[tested], np.minimum(1.0, p[tested] * tested.sum()), rtol=1e-15)
    np.testing.assert_array_equal(adjust_pvalues(p, "none")[tested], p[tested])
    assert not rejected(p, alpha=0.05)[~tested].any()
