"""The drift reference profile survives its file format, names and all; files written before point
masses had bins of their own, or before features of few values were binned by value, still load,
re-binned where that is exact."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import numpy.typing as npt
import pytest

from control_plane.monitoring.profiles import compact
from control_plane.training.reference import build_profile, profile_from_bytes, profile_to_bytes
from kernels.drift import ReferenceProfile, build_reference_profile, counts_from_sorted, drift_scores
from kernels.drift.binning import padded_edges, point_mass_edges
from kernels.drift.profile import with_point_mass_bins


def test_profile_round_trips_through_bytes() -> None:
    rng = np.random.default_rng(3)
    features = rng.normal(size=(500, 3))
    features[::10, 1] = np.nan
    profile = build_profile(features)
    restored, names = profile_from_bytes(profile_to_bytes(profile, ["v@1:a", "v@1:b", "v@1:c"]))
    assert names == ("v@1:a", "v@1:b", "v@1:c")
    assert restored.n_bins == profile.n_bins
    for field in ("edges", "bin_counts", "sorted_values", "n_valid", "n_missing", "mean", "m2"):
        np.testing.assert_array_equal(getattr(restored, field), getattr(profile, field))
    assert list(restored.n_missing) == [0, 50, 0]


def test_names_must_match_the_features() -> None:
    with pytest.raises(ValueError, match="2 names"):
        profile_to_bytes(build_profile(np.zeros((4, 3))), ["a", "b"])


def as_built_before_point_mass_bins(profile: ReferenceProfile) -> ReferenceProfile:
    """``profile`` with the bins the code wrote before point masses had their own: the unique interior
    quantiles, ``+∞``-padded to ``n_bins − 1``."""
    edges = np.full((profile.n_features, profile.n_bins - 1), np.inf)
    counts = np.zeros((profile.n_features, profile.n_bins), dtype=np.int64)
    for f in range(profile.n_features):
        finite = profile.sorted_values[f, : profile.n_valid[f]]
        interior = np.unique(np.quantile(finite, np.linspace(0, 1, profile.n_bins + 1))[1:-1])
        edges[f, : interior.size] = interior
        counts[f] = counts_from_sorted(finite, edges[f])
    return dataclasses.replace(profile, edges=edges, bin_counts=counts)


def flag_and_normal(rows: int, ones: float, seed: int) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    return np.column_stack([(rng.random(rows) < ones).astype(float), rng.normal(size=rows)])


def test_an_old_file_with_its_whole_sample_loads_with_point_mass_bins() -> None:
    features = flag_and_normal(3000, 0.05, 4)
    old = as_built_before_point_mass_bins(build_profile(features))
    assert drift_scores(old, flag_and_normal(3000, 0.9, 5)).psi[0] < 0.2  # the old blindness
    restored, _ = profile_from_bytes(profile_to_bytes(old, ["flag", "x"]))
    fresh = build_profile(features)
    for field in ("edges", "bin_counts", "sorted_values", "n_valid", "n_missing", "mean", "m2"):
        np.testing.assert_array_equal(getattr(restored, field), getattr(fresh, field))
    assert drift_scores(restored, flag_and_normal(3000, 0.9, 5)).psi[0] > 0.2


def test_an_old_compacted_file_keeps_its_bins_and_scores_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    old = compact(as_built_before_point_mass_bins(build_profile(flag_and_normal(3000, 0.05, 6))), 1000)
    with caplog.at_level(logging.WARNING, logger="aether.control_plane.training"):
        restored, _ = profile_from_bytes(profile_to_bytes(old, ["flag", "x"]))
    assert "register it again" in caplog.text and "flag, x" in caplog.text
    np.testing.assert_array_equal(restored.edges, old.edges)
    np.testing.assert_array_equal(restored.bin_counts, old.bin_counts)
    window = flag_and_normal(500, 0.5, 7)
    np.testing.assert_array_equal(drift_scores(restored, window).psi, drift_scores(old, window).psi)


def test_an_old_file_with_imposed_edges_keeps_them() -> None:
    features = flag_and_normal(500, 0.05, 8)
    imposed = np.array([[0.5] + [np.inf] * 8, [-1.0, 0.0, 1.0] + [np.inf] * 6])
    old = build_reference_profile(features, edges=imposed)
    assert with_point_mass_bins(old) is None
    new = build_profile(features)
    assert with_point_mass_bins(new) is new


def codes_and_normal(rows: int, frequencies: list[float], seed: int) -> npt.NDArray[np.float64]:
    """A categorical code 0, 1, ... drawn in these proportions, beside a normal feature."""
    rng = np.random.default_rng(seed)
    counts = np.round(np.array(frequencies) * rows).astype(int)
    codes = rng.permutation(np.repeat(np.arange(len(frequencies)), counts)).astype(float)
    return np.column_stack([codes, rng.normal(size=codes.size)])


def as_built_before_value_bins(profile: ReferenceProfile) -> ReferenceProfile:
    """``profile`` with the bins a few-valued feature had before it was binned by value: the quantile
    rule's (interior quantiles and point masses)."""
    edges = np.stack(
        [
            padded_edges(point_mass_edges(profile.sorted_values[f, : profile.n_valid[f]]), profile.n_bins)
            for f in range(profile.n_features)
        ]
    )
    return build_reference_profile(profile.sorted_values.T, profile.n_bins, edges)


RARE = [0.3, 0.3, 0.05, 0.05, 0.3]
RARE_MOVED = [0.3, 0.3, 0.1, 0.0, 0.3]


def test_a_file_binned_before_value_bins_loads_with_them_when_its_sample_is_complete() -> None:
    features = codes_and_normal(4000, RARE, 9)
    old = as_built_before_value_bins(build_profile(features))
    moved = codes_and_normal(2000, RARE_MOVED, 10)
    assert drift_scores(old, moved).psi[0] == 0.0  # the old blindness: codes 2 and 3 share a bin
    restored, _ = profile_from_bytes(profile_to_bytes(old, ["code", "x"]))
    fresh = build_profile(features)
    for field in ("edges", "bin_counts", "sorted_values", "n_valid", "n_missing", "mean", "m2"):
        np.testing.assert_array_equal(getattr(restored, field), getattr(fresh, field))
    assert drift_scores(restored, moved).psi[0] > 0.2
    assert drift_scores(restored, codes_and_normal(2000, RARE, 11)).psi[0] < 0.1


def test_a_file_binned_before_value_bins_keeps_its_bins_when_compacted_or_imposed() -> None:
    features = codes_and_normal(4000, RARE, 12)
    compacted = compact(as_built_before_value_bins(build_profile(features)), 1000)
    assert with_point_mass_bins(compacted) is compacted
    imposed = build_reference_profile(features, edges=build_profile(features).edges + 0.25)
    assert with_point_mass_bins(imposed) is imposed
