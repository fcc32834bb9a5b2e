"""PSI, Jensen–Shannon and normalised Wasserstein against brute-force versions of the written formulas
and against scipy."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import scipy.spatial.distance
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.drift import (
    DEFAULT_PSI_EPS,
    build_reference_profile,
    drift_scores,
    jensen_shannon,
    psi,
    quantile_edges,
    wasserstein_normalised,
)

FloatArray = npt.NDArray[np.float64]


def brute_bins(ref: FloatArray, cur: FloatArray, n_bins: int) -> tuple[FloatArray, FloatArray]:
    """Proportions per bin, one value at a time: bin = searchsorted(edges, side=right), the edges being
    the unique interior quantiles plus the next float above each value two neighbouring quantiles share;
    for a reference of at most (n_bins + 1) // 2 distinct values, each value and the next float above it."""
    values = sorted(set(ref.tolist()))
    if 2 * len(values) <= n_bins + 1:
        edges = np.unique([*values, *(np.nextafter(v, np.inf) for v in values)])
    else:
        quantiles = np.quantile(ref, np.linspace(0, 1, n_bins + 1))
        point_masses = {
            float(quantiles[i])
            for i in range(1, n_bins)
            if quantiles[i] in (quantiles[i - 1], quantiles[i + 1])
        }
        edges = np.unique(np.concatenate([quantiles[1:-1], [np.nextafter(v, np.inf) for v in point_masses]]))
    edges = edges[np.isfinite(edges)]
    ref_bins = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1)
    cur_bins = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=edges.size + 1)
    return ref_bins / ref.size, cur_bins / cur.size


def brute_psi(ref: FloatArray, cur: FloatArray, n_bins: int, eps: float) -> float:
    p_ref, p_cur = brute_bins(ref, cur, n_bins)
    p_ref = np.maximum(p_ref, eps)
    p_cur = np.maximum(p_cur, eps)
    return float(sum((c - r) * np.log(c / r) for r, c in zip(p_ref, p_cur, strict=True)))


def brute_jsd(ref: FloatArray, cur: FloatArray, n_bins: int) -> float:
    p, q = brute_bins(ref, cur, n_bins)
    total = 0.0
    for a, b in zip(p, q, strict=True):
        m = (a + b) / 2
        if a > 0:
            total += 0.5 * a * np.log2(a / m)
        if b > 0:
            total += 0.5 * b * np.log2(b / m)
    return total


@st.composite
def samples(draw: st.DrawFn) -> tuple[FloatArray, FloatArray, int]:
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n_ref = draw(st.integers(1, 3_000))
    n_cur = draw(st.integers(1, 3_000))
    decimals = draw(st.sampled_from([0, 1, 3, 12]))  # 0 decimals: many tied quantiles
    ref = np.round(rng.normal(size=n_ref), decimals)
    cur = np.round(rng.normal(loc=draw(st.sampled_from([0.0, 0.2, 3.0])), size=n_cur), decimals)
    return ref, cur, draw(st.integers(1, 20))


@settings(max_examples=150, deadline=None)
@given(samples())
def test_psi_and_jsd_equal_the_written_formulas(case: tuple[FloatArray, FloatArray, int]) -> None:
    ref, cur, n_bins = case
    expected_psi = brute_psi(ref, cur, n_bins, DEFAULT_PSI_EPS)
    expected_jsd = brute_jsd(ref, cur, n_bins)
    assert psi(ref, cur, n_bins) == pytest.approx(expected_psi, rel=1e-9, abs=1e-15)
    assert jensen_shannon(ref, cur, n_bins) == pytest.approx(expected_jsd, rel=1e-9, abs=1e-15)


@settings(max_examples=60, deadline=None)
@given(samples())
def test_jsd_is_the_square_of_scipys_base_2_distance(case: tuple[FloatArray, FloatArray, int]) -> None:
    ref, cur, n_bins = case
    p, q = brute_bins(ref, cur, n_bins)
    distance = float(scipy.spatial.distance.jensenshannon(p, q, base=2))
    assert jensen_shannon(ref, cur, n_bins) == pytest.approx(distance**2, rel=1e-9, abs=1e-14)


@settings(max_examples=100, deadline=None)
@given(samples())
def test_wasserstein_equals_scipy_over_reference_std(case: tuple[FloatArray, FloatArray, int]) -> None:
    ref, cur, _ = case
    std = float(np.std(ref))
    ours = wasserstein_normalised(ref, cur)
    theirs = float(scipy.stats.wasserstein_distance(ref, cur))
    if std == 0.0:
        assert ours == (0.0 if theirs == 0.0 else np.inf)
    else:
        assert ours == pytest.approx(theirs / std, rel=1e-9, abs=1e-15)


def test_batched_scores_equal_the_single_feature_functions() -> None:
    rng = np.random.default_rng(5)
    reference = np.round(rng.normal(size=(5_000, 3)), 1)
    current = np.round(rng.normal(size=(700, 3)) + np.array([0.0, 0.4, -1.0]), 1)
    scores = drift_scores(reference, current, n_bins=8)
    for f in range(3):
        ref, cur = reference[:, f], current[:, f]
        assert scores.psi[f] == pytest.approx(brute_psi(ref, cur, 8, DEFAULT_PSI_EPS), rel=1e-9)
        assert scores.jensen_shannon[f] == pytest.approx(brute_jsd(ref, cur, 8), rel=1e-9)
        expected_w = scipy.stats.wasserstein_distance(ref, cur) / np.std(ref)
        assert scores.wasserstein[f] == pytest.approx(expected_w, rel=1e-9)


def test_tied_quantiles_collapse_into_fewer_bins_and_padding_changes_nothing() -> None:
    # 60% zeros: the 10%..60% quantiles are all 0 and collapse into one edge.
    ref = np.concatenate([np.zeros(600), np.linspace(1, 2, 400)])
    edges = quantile_edges(ref, 10)
    assert edges[0] == 0.0 and np.all(np.diff(edges) > 0) and edges.size < 9
    profile = build_reference_profile(ref, n_bins=10)
    assert np.all(np.isinf(profile.edges[0, edges.size :]))  # +inf padding
    assert profile.bin_counts[0].sum() == 1_000 and profile.bin_counts[0, edges.size + 1 :].sum() == 0
    cur = np.concatenate([np.zeros(100), np.linspace(1, 2, 300)])
    scores = drift_scores(profile, cur[:, np.newaxis])
    assert scores.psi[0] == pytest.approx(brute_psi(ref, cur, 10, DEFAULT_PSI_EPS), rel=1e-9)
    assert scores.jensen_shannon[0] == pytest.approx(brute_jsd(ref, cur, 10), rel=1e-9)


def test_empty_bins_use_the_epsilon_floor() -> None:
    ref = np.linspace(0.0, 1.0, 1_000)
    cur = np.full(200, 5.0)  # every current value in the last bin; nine bins empty
    p_ref, eps = 0.1, DEFAULT_PSI_EPS
    expected = 9 * (eps - p_ref) * np.log(eps / p_ref) + (1 - p_ref) * np.log(1 / p_ref)
    assert psi(ref, cur) == pytest.approx(expected, rel=1e-12)
    assert psi(ref, cur, eps=1e-6) > psi(ref, cur)


def test_identical_samples_score_zero_and_a_far_shift_scores_high() -> None:
    rng = np.random.default_rng(9)
    ref = rng.normal(size=2_000)
    assert psi(ref, ref) == 0.0
    assert jensen_shannon(ref, ref) == 0.0
    assert wasserstein_normalised(ref, ref) == pytest.approx(0.0, abs=1e-15)
    # Everything lands in the last reference bin: 9 bins with p = 0.1, q = 0 and one with p = 0.1, q = 1.
    far = 0.45 + 0.05 * np.log2(0.1 / 0.55) + 0.5 * np.log2(1 / 0.55)
    assert jensen_shannon(ref, ref + 100.0) == pytest.approx(far, rel=1e-12)
    assert psi(ref, ref + 100.0) > 2.0
    assert wasserstein_normalised(ref, ref + 100.0) == pytest.approx(100.0 / np.std(ref), rel=1e-9)
