"""Normalised Wasserstein on huge finite values: the statistic is scale-free, so values scaled by a power
of two (exact in floating point) must score as the unscaled ones do, against a brute-force reference
(``scipy.stats.wasserstein_distance / numpy.std`` on the unscaled values). Squares of values above ~1e154
(the reference's m2, numpy's std) and differences of values near the float64 bound overflowed to ``inf``:
the score read 0 (no drift) or NaN for samples that plainly drifted."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.drift import build_reference_profile, drift_scores, wasserstein_normalised

samples = st.lists(st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False), min_size=30, max_size=80)


def brute_force(reference: list[float], current: list[float]) -> float:
    std = float(np.std(reference))
    area = float(scipy.stats.wasserstein_distance(reference, current))
    if std == 0.0:
        return 0.0 if area == 0.0 else math.inf
    return area / std


@settings(max_examples=150, deadline=None)
@given(reference=samples, current=samples, exponent=st.integers(0, 1012))
def test_scaled_samples_score_as_the_unscaled_ones(
    reference: list[float], current: list[float], exponent: int
) -> None:
    expected = brute_force(reference, current)
    scale = 2.0**exponent  # exact: the scaled values are the same numbers, 2**exponent larger
    ref, cur = np.array(reference) * scale, np.array(current) * scale
    assert np.all(np.isfinite(ref)) and np.all(np.isfinite(cur))
    one = wasserstein_normalised(ref, cur)
    batched = drift_scores(build_reference_profile(ref), cur[:, np.newaxis]).wasserstein[0]
    if math.isinf(expected):
        assert one == batched == math.inf
    else:
        assert one == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert batched == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_a_shift_among_values_near_the_float64_bound_is_finite_and_drifts() -> None:
    rng = np.random.default_rng(3)
    reference = rng.normal(size=500) * 1e306
    current = reference + 2e306  # two standard deviations up
    one = wasserstein_normalised(reference, current)
    batched = drift_scores(reference[:, np.newaxis], current[:, np.newaxis]).wasserstein[0]
    assert one == pytest.approx(brute_force(list(reference / 1e300), list(current / 1e300)), rel=1e-9)
    assert batched == pytest.approx(one, rel=1e-9) and math.isfinite(one) and one > 1.5
