"""The drift reference profile survives its file format, names and all."""

from __future__ import annotations

import numpy as np
import pytest

from control_plane.training.reference import build_profile, profile_from_bytes, profile_to_bytes


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
