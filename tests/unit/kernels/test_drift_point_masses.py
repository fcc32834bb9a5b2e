"""Point masses in the reference (a 0/1 flag, a feature constant in training, a value capped at its max)
get a bin of their own, so PSI and Jensen–Shannon see a move *upward* off the mass as well as a move
downward. Checked against a brute-force binning written one value at a time from the documented rule."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.monitoring.profiles import compact
from kernels.drift import (
    DEFAULT_PSI_EPS,
    at_precision,
    build_reference_profile,
    drift_scores,
    jensen_shannon,
    psi,
    quantile_edges,
    round_to,
)

FloatArray = npt.NDArray[np.float64]
PSI_THRESHOLD = 0.2  # the monitor's default PSI threshold
JSD_THRESHOLD = 0.1  # and its default JSD one


# ---------------------------------------------------------------------------- the brute-force reference


def quantile_masses(ref: FloatArray, n_bins: int) -> set[float]:
    """Values two consecutive reference quantiles land on, at least one of them interior (the rule)."""
    q = [float(x) for x in np.quantile(ref, np.linspace(0, 1, n_bins + 1))]
    masses = set()
    for i in range(n_bins):
        if q[i] == q[i + 1] and (i >= 1 or i + 1 <= n_bins - 1):
            masses.add(q[i])
    return masses


def brute_edges(ref: FloatArray, n_bins: int) -> list[float]:
    """The interior quantiles, plus the float right above each point mass, sorted and de-duplicated; for a
    reference of at most (n_bins + 1) // 2 distinct values, each value and the float right above it."""
    values = sorted(set(ref.tolist()))
    if 2 * len(values) <= n_bins + 1:
        return sorted({*values, *(math.nextafter(v, math.inf) for v in values)} - {math.inf})
    q = [float(x) for x in np.quantile(ref, np.linspace(0, 1, n_bins + 1))]
    edges = set(q[1:-1])
    for v in quantile_masses(ref, n_bins):
        above = math.nextafter(v, math.inf)
        if math.isfinite(above):
            edges.add(above)
    return sorted(edges)


def brute_bin(edges: list[float], x: float) -> int:
    """Bins closed on the left: the number of edges at or below ``x``."""
    return sum(1 for e in edges if e <= x)


def brute_counts(edges: list[float], values: FloatArray) -> list[int]:
    counts = [0] * (len(edges) + 1)
    for x in values:
        counts[brute_bin(edges, float(x))] += 1
    return counts


def brute_psi(ref: FloatArray, cur: FloatArray, n_bins: int) -> float:
    edges = brute_edges(ref, n_bins)
    total = 0.0
    for r, c in zip(brute_counts(edges, ref), brute_counts(edges, cur), strict=True):
        p, q = max(r / ref.size, DEFAULT_PSI_EPS), max(c / cur.size, DEFAULT_PSI_EPS)
        total += (q - p) * math.log(q / p)
    return total


# ---------------------------------------------------------------------------- the reviewer's cases


def test_a_rare_flag_that_becomes_common_drifts() -> None:
    rng = np.random.default_rng(0)
    ref = (rng.random(5000) < 0.05).astype(float)  # 5 % ones in training
    cur = (rng.random(5000) < 0.90).astype(float)  # 90 % ones in production
    assert psi(ref, cur) > PSI_THRESHOLD and jensen_shannon(ref, cur) > JSD_THRESHOLD
    scores = drift_scores(build_reference_profile(ref), cur)
    assert scores.psi[0] > PSI_THRESHOLD and scores.jensen_shannon[0] > JSD_THRESHOLD


@pytest.mark.parametrize("moved_to", [7.0, 3.0 + 1e-9, 1.0])
def test_a_constant_feature_that_moves_up_or_down_drifts(moved_to: float) -> None:
    ref = np.full(5000, 3.0)
    cur = np.full(5000, moved_to)
    profile = build_reference_profile(ref)
    assert quantile_edges(ref).tolist() == [3.0, math.nextafter(3.0, math.inf)]
    scores = drift_scores(profile, cur)
    assert scores.psi[0] > PSI_THRESHOLD and scores.jensen_shannon[0] == pytest.approx(1.0)
    # The same window as the reference scores nothing: the point-mass bin holds all of both.
    assert drift_scores(profile, ref).psi[0] == 0.0


def test_a_value_capped_at_its_max_drifts_when_the_cap_is_lifted() -> None:
    rng = np.random.default_rng(1)
    raw = rng.exponential(size=5000)
    cap = float(np.quantile(raw, 0.85))  # 15 %: only the top quantile pair lands on the cap
    ref = np.minimum(raw, cap)
    cur = rng.exponential(size=5000)  # the cap lifted: 15 % above it, none at it
    assert cap in quantile_masses(ref, 10)
    assert psi(ref, cur) > PSI_THRESHOLD


def codes(frequencies: list[float], n: int) -> FloatArray:
    """``n`` values of the codes 0, 1, ... in these proportions (a categorical feature's codes)."""
    return np.repeat(np.arange(len(frequencies)), np.round(np.array(frequencies) * n).astype(int)).astype(
        float
    )


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ([0.3, 0.3, 0.05, 0.05, 0.3], [0.3, 0.3, 0.1, 0.0, 0.3]),  # two rare codes between quantiles
        ([0.45, 0.45, 0.05, 0.05], [0.45, 0.45, 0.0, 0.1]),  # two rare codes at the top
        ([0.05, 0.05, 0.9], [0.1, 0.0, 0.9]),  # two rare codes at the bottom
    ],
)
def test_a_move_between_rare_codes_of_a_few_valued_feature_drifts(
    before: list[float], after: list[float]
) -> None:
    """A feature of a few distinct values (a categorical code) is binned by value. On quantile bins two
    codes of less than two quantile steps each shared a bin, and 5 % of the rows changing code read PSI 0
    and JSD 0 (categorical PSI, the codes as bins, is 0.35)."""
    ref, cur = codes(before, 10_000), codes(after, 2_000)
    assert psi(ref, cur) > PSI_THRESHOLD
    assert jensen_shannon(ref, cur) > 0.01
    scores = drift_scores(build_reference_profile(ref), cur)
    assert scores.psi[0] > PSI_THRESHOLD
    # Each code is a bin of its own, and so is each gap between, below and above them.
    edges = quantile_edges(ref)
    distinct = np.unique(ref)
    assert edges.tolist() == sorted([*distinct.tolist(), *np.nextafter(distinct, np.inf).tolist()])


def test_distinct_quantiles_get_no_extra_edges() -> None:
    ref = np.random.default_rng(2).normal(size=3000)
    edges = quantile_edges(ref)
    np.testing.assert_array_equal(edges, np.quantile(ref, np.linspace(0, 1, 11))[1:-1])


# ---------------------------------------------------------------------------- properties


@st.composite
def with_point_masses(draw: st.DrawFn) -> tuple[FloatArray, FloatArray, int]:
    """A reference mixing continuous values with up to three point masses (one may sit at the min or the
    max), a current sample, and a number of bins."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(2, 2000))
    n_bins = draw(st.integers(1, 20))
    decimals = draw(st.sampled_from([0, 2, 12]))
    parts = [np.round(rng.normal(size=n), decimals)]
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.sampled_from(["inside", "min", "max", "anywhere"]))
        value = {
            "inside": float(parts[0][rng.integers(n)]),
            "min": float(np.min(parts[0])),
            "max": float(np.max(parts[0])),
            "anywhere": draw(st.floats(-1e6, 1e6, allow_nan=False)),
        }[where]
        parts.append(np.full(draw(st.integers(1, 2 * n)), value))
    ref = np.concatenate(parts)
    cur = np.concatenate([rng.choice(ref, size=draw(st.integers(1, 500))), rng.normal(size=50)])
    return ref, cur, n_bins


@settings(max_examples=200, deadline=None)
@given(with_point_masses())
def test_every_quantile_mass_is_a_bin_of_its_own(case: tuple[FloatArray, FloatArray, int]) -> None:
    ref, cur, n_bins = case
    edges = quantile_edges(ref, n_bins)
    assert edges.tolist() == brute_edges(ref, n_bins)
    assert edges.size <= n_bins + 1  # the documented bound: two more than the n_bins - 1 quantiles
    listed = edges.tolist()
    for v in quantile_masses(ref, n_bins):
        own = brute_bin(listed, v)
        # Nothing else, below or above, shares the bin of v.
        neighbours = [math.nextafter(v, -math.inf), math.nextafter(v, math.inf), *ref.tolist(), *cur.tolist()]
        assert all(brute_bin(listed, x) != own for x in neighbours if x != v)


@settings(max_examples=200, deadline=None)
@given(with_point_masses())
def test_profile_and_window_counts_equal_the_brute_force_binning(
    case: tuple[FloatArray, FloatArray, int],
) -> None:
    ref, cur, n_bins = case
    edges = brute_edges(ref, n_bins)
    profile = build_reference_profile(ref, n_bins=n_bins)
    scores = drift_scores(profile, cur, n_bins=n_bins, min_samples=1)
    width = len(edges) + 1
    assert profile.bin_counts[0, :width].tolist() == brute_counts(edges, ref)
    assert scores.current_bin_counts[0, :width].tolist() == brute_counts(edges, cur)
    assert not profile.bin_counts[0, width:].any() and not scores.current_bin_counts[0, width:].any()
    assert scores.psi[0] == pytest.approx(brute_psi(ref, cur, n_bins), rel=1e-9, abs=1e-12)
    assert psi(ref, cur, n_bins) == pytest.approx(brute_psi(ref, cur, n_bins), rel=1e-9, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(3, 20),
    st.floats(0.0, 1.0),
    st.sampled_from(["tiny", "small", "large"]),
    st.sampled_from(["below", "inside", "above"]),
)
def test_moving_a_point_mass_up_scores_above_the_threshold(
    seed: int, n_bins: int, share: float, step: str, position: str
) -> None:
    """A value holding two quantile steps of the reference (plus 3 values) always gets its own bin (the
    bound is in :func:`kernels.drift.binning.quantile_edges`), so moving that mass up by any amount — by
    one ulp or past every other value — is a PSI drift."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=int(rng.integers(0, 1500)))
    v = {"below": -10.0, "inside": 0.0, "above": 10.0}[position]
    # K values at v among N = base + K: K >= 2 (N - 1) / n + 3, solved for K.
    needed = math.ceil((2 * (base.size - 1) + 3 * n_bins) / (n_bins - 2))
    mass = max(needed, int(share * 3000))
    ref = np.concatenate([base, np.full(mass, v)])
    assert v in quantile_masses(ref, n_bins)
    moved = {"tiny": math.nextafter(v, math.inf), "small": v + 1e-6, "large": v + 100.0}[step]
    cur = np.concatenate([base, np.full(mass, moved)])
    assert psi(ref, cur, n_bins) > PSI_THRESHOLD
    profile = build_reference_profile(ref, n_bins=n_bins)
    assert drift_scores(profile, cur, min_samples=1).psi[0] > PSI_THRESHOLD


# ---------------------------------------------------------------------------- the served precision
def _float32(values: FloatArray) -> FloatArray:
    return round_to(values, np.float32)


def test_a_profile_at_float32_is_the_profile_of_the_values_rounded_to_float32() -> None:
    rng = np.random.default_rng(5)
    reference = np.column_stack(
        [rng.choice([0.1, 0.3, 2.7], 3000), rng.normal(size=3000), np.full(3000, 1e39)]  # 1e39: past float32
    )
    reference[::7, 1] = np.nan
    rounded = at_precision(build_reference_profile(reference), np.float32)
    expected = build_reference_profile(_float32(reference))
    for name in ("edges", "bin_counts", "sorted_values", "n_valid", "n_missing", "mean", "m2"):
        np.testing.assert_array_equal(getattr(rounded, name), getattr(expected, name), err_msg=name)
    exact = build_reference_profile(_float32(reference))
    assert at_precision(exact, np.float32) is exact
    assert at_precision(rounded, np.float64) is rounded


@pytest.mark.parametrize("kind", ["compacted", "imposed edges"])
def test_a_profile_that_cannot_be_rebuilt_keeps_a_bin_per_point_mass_at_float32(kind: str) -> None:
    rng = np.random.default_rng(6)
    reference = np.column_stack([rng.choice([0.1, 0.3], 5000), np.full(5000, 2.7)])
    profile = build_reference_profile(reference)
    if kind == "compacted":
        profile = compact(profile, max_values=500)
    else:
        profile = build_reference_profile(reference, edges=profile.edges + 1e-17)  # not its quantile edges
    rounded = at_precision(profile, np.float32)
    assert rounded.edges.shape == profile.edges.shape
    served = _float32(np.column_stack([rng.choice([0.1, 0.3], 1000), np.full(1000, 2.7)]))
    scores = drift_scores(rounded, served)
    assert np.all(scores.psi < PSI_THRESHOLD) and np.all(scores.jensen_shannon < JSD_THRESHOLD)
    moved = served.copy()
    moved[:, 0] = float(np.float32(0.3))
    assert drift_scores(rounded, moved).psi[0] > PSI_THRESHOLD
    above = served.copy()
    above[:, 1] = float(np.nextafter(np.float32(2.7), np.float32(np.inf)))  # one float32 step up off the mass
    assert drift_scores(rounded, above).psi[1] > PSI_THRESHOLD


def test_a_compacted_profile_at_float16_is_recounted_and_reads_unchanged_traffic_as_no_drift() -> None:
    # float16 holds only every other integer past 2048: the float64 deciles of [2048, 2058) round onto a
    # few representable values (edges that meet kept one step apart), while a compacted profile kept its
    # float64 bin counts, 10 % a bin. The served values, rounded the same way, fill other bins than those
    # counts say: unchanged traffic read PSI ≈ 3 (JSD ≈ 0.25), where the complete profile, rebuilt from
    # its rounded values, read ≈ 0.001. The compacted one now recounts its bins on its rounded sample.
    rng = np.random.default_rng(7)
    reference = rng.uniform(2048, 2058, size=(30_000, 1))
    compacted = at_precision(compact(build_reference_profile(reference), max_values=5000), np.float16)
    assert int(compacted.bin_counts.sum()) == 30_000  # still the whole reference's rows
    served = round_to(rng.uniform(2048, 2058, size=(2000, 1)), np.float16)
    scores = drift_scores(compacted, served)
    assert scores.psi[0] < 0.05 and scores.jensen_shannon[0] < 0.01
    shifted = round_to(rng.uniform(2052, 2062, size=(2000, 1)), np.float16)
    assert drift_scores(compacted, shifted).psi[0] > PSI_THRESHOLD
