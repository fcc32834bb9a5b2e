"""Two-sample KS: statistic and p-value against scipy.stats.ks_2samp on random data, ties included."""

from __future__ import annotations

import math
import warnings

import numpy as np
import numpy.typing as npt
import pytest
import scipy.special
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.drift import EXACT_MAX_N, drift_scores, ks_2samp
from kernels.drift.kstwo import kstwo_sf, smirnov_sf

FloatArray = npt.NDArray[np.float64]

# p-values below this are subnormal doubles with few significant bits (in scipy's value too).
TINY = 1e-300


def assert_same_pvalue(ours: float, theirs: float) -> None:
    assert ours == pytest.approx(theirs, rel=1e-9, abs=TINY)


@st.composite
def sample_pairs(draw: st.DrawFn) -> tuple[FloatArray, FloatArray]:
    """Two samples whose sizes straddle the exact/asymptotic switch; few decimals force many ties."""
    n_ref = draw(st.integers(1, 400) | st.integers(9_000, 12_000))
    n_cur = draw(st.just(n_ref) | st.integers(1, 400) | st.integers(9_000, 12_000))
    seed = draw(st.integers(0, 2**32 - 1))
    decimals = draw(st.sampled_from([0, 1, 2, 8]))
    shift = draw(st.sampled_from([0.0, 0.05, 0.3, 2.0]))
    rng = np.random.default_rng(seed)
    ref = np.round(rng.normal(size=n_ref), decimals)
    cur = np.round(rng.normal(loc=shift, size=n_cur), decimals)
    return ref, cur


@settings(max_examples=120, deadline=None)
@given(sample_pairs())
def test_ks_matches_scipy(pair: tuple[FloatArray, FloatArray]) -> None:
    ref, cur = pair
    ours = ks_2samp(ref, cur)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        theirs = scipy.stats.ks_2samp(ref, cur)
    # scipy falls back to the asymptotic distribution when its exact recursion fails; so do we.
    fell_back = any("Exact calculation unsuccessful" in str(w.message) for w in caught)
    assert ours.statistic == theirs.statistic
    assert_same_pvalue(ours.pvalue, float(theirs.pvalue))
    assert ours.exact == (max(ref.shape[0], cur.shape[0]) <= EXACT_MAX_N and not fell_back)


@pytest.mark.parametrize(
    ("n_ref", "n_cur"),
    [(1, 1), (1, 7), (30, 30), (10_000, 10_000), (10_000, 9_999), (10_001, 10), (20_000, 3_000)],
)
def test_ks_matches_scipy_at_size_edges(n_ref: int, n_cur: int) -> None:
    rng = np.random.default_rng(n_ref * 7 + n_cur)
    ref = rng.normal(size=n_ref)
    cur = rng.normal(loc=0.1, size=n_cur)
    ours = ks_2samp(ref, cur)
    theirs = scipy.stats.ks_2samp(ref, cur)
    assert ours.statistic == theirs.statistic
    assert_same_pvalue(ours.pvalue, float(theirs.pvalue))


def test_ks_all_ties_is_no_difference() -> None:
    result = ks_2samp(np.zeros(50), np.zeros(80))
    assert result.statistic == 0.0
    assert result.pvalue == 1.0


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(141, 30_000),
    nxx=st.floats(2.2, 369.0),
)
def test_fast_smirnov_branch_matches_scipy(n: int, nxx: float) -> None:
    """The Smirnov sum kstwo_sf computes itself (scipy's slow branch) against scipy.special.smirnov."""
    x = math.sqrt(nxx / n)
    if x >= 0.5:
        return
    assert smirnov_sf(n, x) == pytest.approx(float(scipy.special.smirnov(n, x)), rel=1e-9, abs=TINY)


def test_kstwo_sf_matches_scipy_on_every_branch() -> None:
    d = np.array([0.0, 1e-6, 0.004, 0.02, 0.05, 0.3, 0.6, 1.0, 0.01, 0.2, 0.5])
    n = np.array([50_000.0, 50_000, 50_000, 50_000, 50_000, 50_000, 50_000, 50_000, 100, 100, 3])
    ours = kstwo_sf(d, n)
    theirs = scipy.stats.kstwo.sf(d, n)
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=TINY)


def test_batched_ks_matches_scipy_per_feature() -> None:
    rng = np.random.default_rng(11)
    reference = rng.normal(size=(30_000, 4))
    current = rng.normal(size=(2_000, 4)) + np.array([0.0, 0.03, 0.1, 1.0])
    scores = drift_scores(reference, current)
    for f in range(4):
        theirs = scipy.stats.ks_2samp(reference[:, f], current[:, f])
        assert scores.ks_statistic[f] == theirs.statistic
        assert_same_pvalue(float(scores.ks_pvalue[f]), float(theirs.pvalue))
        assert not scores.ks_exact[f]


def test_non_finite_input_is_rejected_by_the_single_sample_api() -> None:
    with pytest.raises(ValueError, match="finite"):
        ks_2samp(np.array([0.0, np.nan, 1.0]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="non-empty"):
        ks_2samp(np.array([]), np.array([1.0]))
