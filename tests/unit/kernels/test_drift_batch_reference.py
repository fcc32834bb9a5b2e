"""The batched drift scores the monitor uses (a stored profile against a window of many features at once)
against brute force on each feature's finite values alone: numpy quantile bins for PSI and JSD,
``scipy.stats.ks_2samp`` and ``scipy.stats.wasserstein_distance``. The features mix the edge cases a
logged window holds: constant columns, all-missing columns, a few finite values among NaN and ±∞, 0/1
flags, heavy ties, tiny and huge scales."""

from __future__ import annotations

import math
import warnings

import numpy as np
import numpy.typing as npt
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.drift import DEFAULT_PSI_EPS, build_reference_profile, drift_scores
from tests.unit.kernels.test_drift_binned import brute_jsd, brute_psi

FloatArray = npt.NDArray[np.float64]
KINDS = ("normal", "ties", "constant", "all_missing", "sparse", "flag", "tiny", "huge")


def column(rng: np.random.Generator, kind: str, rows: int, shift: float) -> FloatArray:
    if kind == "normal":
        return rng.normal(shift, 1.0, rows)
    if kind == "ties":
        return np.round(rng.normal(shift, 1.0, rows))
    if kind == "constant":
        return np.full(rows, 3.0 + round(shift))
    if kind == "all_missing":
        return rng.choice([np.nan, np.inf, -np.inf], rows)
    if kind == "sparse":
        values = rng.normal(shift, 1.0, rows)
        values[rng.random(rows) < 0.9] = np.nan
        return values
    if kind == "flag":
        return (rng.random(rows) < min(0.9, 0.1 + abs(shift) / 4)).astype(np.float64)
    if kind == "tiny":
        return rng.normal(shift, 1.0, rows) * 1e-9
    return rng.normal(shift, 1.0, rows) * 1e12  # huge


@st.composite
def matrices(draw: st.DrawFn) -> tuple[FloatArray, FloatArray, int]:
    """A reference and a window of the same mixed features, some values missing; and ``min_samples``."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=6))
    n_ref, n_cur = draw(st.integers(1, 2_000)), draw(st.integers(1, 600))
    shift = draw(st.sampled_from([0.0, 0.3, 2.0]))
    reference = np.stack([column(rng, kind, n_ref, 0.0) for kind in kinds], axis=1)
    window = np.stack([column(rng, kind, n_cur, shift) for kind in kinds], axis=1)
    for matrix in (reference, window):
        holes = rng.random(matrix.shape) < draw(st.sampled_from([0.0, 0.05, 0.5]))
        matrix[holes] = rng.choice([np.nan, np.inf, -np.inf], int(holes.sum()))
    return reference, window, draw(st.integers(1, 40))


@settings(max_examples=150, deadline=None)
@given(matrices())
def test_batched_scores_equal_brute_force_on_each_features_finite_values(
    case: tuple[FloatArray, FloatArray, int],
) -> None:
    reference, window, min_samples = case
    scores = drift_scores(build_reference_profile(reference), window, min_samples=min_samples)
    for f in range(reference.shape[1]):
        ref = reference[:, f][np.isfinite(reference[:, f])]
        cur = window[:, f][np.isfinite(window[:, f])]
        assert (scores.n_reference[f], scores.n_current[f]) == (ref.size, cur.size)
        assert scores.missing_reference[f] == reference.shape[0] - ref.size
        assert scores.missing_current[f] == window.shape[0] - cur.size
        insufficient = ref.size < min_samples or cur.size < min_samples
        assert scores.insufficient[f] == insufficient
        values = (scores.psi[f], scores.jensen_shannon[f], scores.ks_statistic[f], scores.ks_pvalue[f])
        if insufficient:
            assert all(math.isnan(v) for v in (*values, scores.wasserstein[f]))
            continue
        assert scores.psi[f] == pytest.approx(brute_psi(ref, cur, 10, DEFAULT_PSI_EPS), rel=1e-9, abs=1e-15)
        assert scores.jensen_shannon[f] == pytest.approx(brute_jsd(ref, cur, 10), rel=1e-9, abs=1e-15)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ks = scipy.stats.ks_2samp(ref, cur)
        assert scores.ks_statistic[f] == pytest.approx(float(ks.statistic), rel=1e-12, abs=1e-15)
        assert scores.ks_pvalue[f] == pytest.approx(float(ks.pvalue), rel=1e-9, abs=1e-300)
        std = float(np.std(ref))
        distance = float(scipy.stats.wasserstein_distance(ref, cur))
        if std == 0.0:
            assert scores.wasserstein[f] == (0.0 if distance == 0.0 else np.inf)
        else:
            assert scores.wasserstein[f] == pytest.approx(distance / std, rel=1e-9, abs=1e-15)
