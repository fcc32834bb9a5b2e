"""Categorical drift: chi-squared homogeneity against scipy.stats.chi2_contingency, L∞ against its
definition, missing codes counted, insufficient data flagged."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.drift import categorical_drift, category_counts, chi_squared_homogeneity, linf_distance

IntArray = npt.NDArray[np.int64]


@st.composite
def count_pairs(draw: st.DrawFn) -> tuple[IntArray, IntArray]:
    k = draw(st.integers(2, 12))
    counts = st.lists(st.integers(0, 500), min_size=k, max_size=k)
    ref = np.array(draw(counts), dtype=np.int64)
    cur = np.array(draw(counts), dtype=np.int64)
    if ref.sum() == 0:
        ref[0] = 1
    if cur.sum() == 0:
        cur[-1] = 1
    return ref, cur


@settings(max_examples=150, deadline=None)
@given(count_pairs())
def test_chi_squared_equals_scipy_contingency_without_correction(pair: tuple[IntArray, IntArray]) -> None:
    ref, cur = pair
    statistic, pvalue, dof = chi_squared_homogeneity(ref, cur)
    occupied = (ref + cur) > 0
    if occupied.sum() < 2:
        assert (statistic, pvalue, dof) == (0.0, 1.0, 0)
        return
    expected = scipy.stats.chi2_contingency(np.stack([ref[occupied], cur[occupied]]), correction=False)
    assert statistic == pytest.approx(expected.statistic, rel=1e-9, abs=1e-12)
    assert pvalue == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)
    assert dof == expected.dof


@settings(max_examples=100, deadline=None)
@given(count_pairs())
def test_linf_is_the_largest_frequency_gap(pair: tuple[IntArray, IntArray]) -> None:
    ref, cur = pair
    gaps = [abs(c / cur.sum() - r / ref.sum()) for r, c in zip(ref, cur, strict=True)]
    assert linf_distance(ref, cur) == pytest.approx(max(gaps), rel=1e-12)


def test_codes_are_counted_and_negative_codes_are_missing() -> None:
    counts, missing = category_counts(np.array([0, 2, 2, -1, 1, -1, 2]), n_categories=4)
    assert counts.tolist() == [1, 1, 3, 0]
    assert missing == 2
    with pytest.raises(ValueError, match="out of range"):
        category_counts(np.array([0, 4]), n_categories=4)
    with pytest.raises(TypeError):
        category_counts(np.array([0.5, 1.0]), n_categories=4)


def test_same_frequencies_do_not_drift_and_a_new_mix_does() -> None:
    same = categorical_drift([500, 300, 200], [50, 30, 20])
    assert same.chi2_statistic == pytest.approx(0.0, abs=1e-12)
    assert same.chi2_pvalue == pytest.approx(1.0)
    assert same.linf == pytest.approx(0.0, abs=1e-15)
    moved = categorical_drift([500, 300, 200], [20, 30, 50], missing_current=7)
    assert moved.chi2_pvalue < 1e-6
    assert moved.linf == pytest.approx(0.3)
    assert moved.missing_current == 7 and not moved.insufficient


def test_too_few_values_is_insufficient_not_a_score() -> None:
    result = categorical_drift([500, 300, 200], [5, 3, 2], missing_current=40, min_samples=30)
    assert result.insufficient
    assert np.isnan(result.chi2_statistic) and np.isnan(result.chi2_pvalue) and np.isnan(result.linf)
    assert result.n_current == 10 and result.missing_current == 40
