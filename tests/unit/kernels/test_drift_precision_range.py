"""A reference value past the served dtype's range (float16: from 65520 up, rounding to ±∞) is missing in
the profile at that precision, compacted or not, as it is in the window (:func:`round_to` makes it ±∞,
and the scores leave it out). A compacted profile kept such values at their float64 value, in its sample
and its bins, so a float16 window of the very reference read as drift in its top bins.

Checked against a brute-force reference: the profile of every reference value rounded to the dtype
(:func:`build_reference_profile` of :func:`round_to`), which is what a window of the same values holds. A
compacted profile keeps order statistics only, so its counts may be off by one order statistic's share of
the reference, as its bin counts already are (:func:`at_precision`)."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.monitoring.profiles import compact
from kernels.drift import at_precision, build_reference_profile, drift_scores, round_to

FloatArray = npt.NDArray[np.float64]
FLOAT16_MAX = 65504.0
PSI_THRESHOLD = 0.2


@st.composite
def references(draw: st.DrawFn) -> FloatArray:
    """One feature: values in range, past it either way, at its very edge, and some missing."""
    n = draw(st.integers(20, 1500))
    seed = draw(st.integers(0, 2**32 - 1))
    shares = draw(st.lists(st.floats(0.0, 1.0), min_size=5, max_size=5).filter(lambda s: sum(s) > 0))
    rng = np.random.default_rng(seed)
    kinds = rng.choice(5, size=n, p=np.asarray(shares) / sum(shares))
    values = np.select(
        [kinds == 0, kinds == 1, kinds == 2, kinds == 3],
        [
            rng.uniform(-1000.0, 60_000.0, n),  # in range
            rng.uniform(65_520.0, 1e7, n),  # past it: +∞ at float16
            -rng.uniform(65_520.0, 1e30, n),  # past it below: -∞
            rng.choice([65_504.0, 65_519.0, 65_520.0], n),  # its edge: the last two round apart
        ],
        default=np.nan,
    )
    return values[:, np.newaxis]


@settings(max_examples=150)
@given(reference=references(), keep=st.floats(0.01, 1.0))
def test_a_compacted_profile_at_float16_counts_what_the_window_reads_as_missing_as_missing(
    reference: FloatArray, keep: float
) -> None:
    brute = build_reference_profile(round_to(reference, np.float16))
    n_finite = int(np.count_nonzero(np.isfinite(reference)))
    max_values = max(2, round(n_finite * keep))
    profile = at_precision(compact(build_reference_profile(reference), max_values), np.float16)
    kept = profile.sorted_values[0, : profile.n_valid[0]]
    assert np.all(np.isfinite(kept)), "a value the window reads as missing was kept as a finite value"
    assert np.all(np.diff(kept) >= 0)
    assert np.all(np.isnan(profile.sorted_values[0, profile.n_valid[0] :]))
    # every reference row is still in one bin or missing
    assert int(profile.bin_counts[0].sum() + profile.n_missing[0]) == reference.shape[0]
    # Off by at most one order statistic's spacing at each end of the sample (and one row of rounding);
    # exact when nothing was compacted.
    kept_stats = min(max_values, n_finite)
    spacing = (n_finite - 1) / (kept_stats - 1) if kept_stats > 1 else n_finite
    off = 0 if kept_stats == n_finite else 2 * math.ceil(spacing) + 1
    assert abs(int(profile.n_missing[0]) - int(brute.n_missing[0])) <= off
    if profile.n_valid[0]:
        # the mean and spread are of values the window can read (within one float16 step: 32 at most)
        finite = brute.sorted_values[0, : brute.n_valid[0]]
        assert finite[0] - 32 <= profile.mean[0] <= finite[-1] + 32
        assert np.isfinite(profile.std[0])


def test_a_complete_profile_at_float16_is_the_brute_force_profile_past_the_range_too() -> None:
    rng = np.random.default_rng(3)
    reference = np.concatenate([rng.uniform(0, 60_000, 900), rng.uniform(65_520, 1e6, 100)])[:, np.newaxis]
    rounded = at_precision(build_reference_profile(reference), np.float16)
    brute = build_reference_profile(round_to(reference, np.float16))
    for name in ("edges", "bin_counts", "sorted_values", "n_valid", "n_missing", "mean", "m2"):
        np.testing.assert_array_equal(getattr(rounded, name), getattr(brute, name), err_msg=name)


def test_a_float16_window_of_the_reference_itself_is_no_drift_against_its_compacted_profile() -> None:
    # A fifth of the reference is past float16's range: the window reads it as missing. The compacted
    # profile kept it in its top bins, so the window's finite values filled the other bins fuller than the
    # profile said: PSI ≈ 0.45 for the reference against itself.
    rng = np.random.default_rng(11)
    reference = np.concatenate([rng.uniform(0, 60_000, 24_000), rng.uniform(70_000, 1e6, 6_000)])
    rng.shuffle(reference)
    profile = at_precision(compact(build_reference_profile(reference[:, np.newaxis]), 3000), np.float16)
    window = round_to(reference[:5000, np.newaxis], np.float16)
    scores = drift_scores(profile, window)
    assert scores.psi[0] < 0.05, scores.psi
    assert abs(profile.n_missing[0] / reference.shape[0] - 0.2) < 0.01
