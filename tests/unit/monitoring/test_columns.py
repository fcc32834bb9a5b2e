"""Pairing a reference profile's features with the logged columns by name (:mod:`.columns`), and what a
drift verdict makes of it (:func:`.drift.evaluate`, on real profiles)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.monitoring.columns import NOT_PROFILED, pair_columns
from control_plane.monitoring.drift import DriftRule, evaluate
from kernels.drift import build_reference_profile, select_features

LOGGED = ("usage@2:calls", "usage@2:minutes", "billing@1:spend")
RULE = DriftRule(pb.DRIFT_TEST_PSI, 0.2, pb.MULTIPLE_TESTING_CORRECTION_BENJAMINI_HOCHBERG, 0.3, 30)


def test_exact_names_pair_whatever_their_order() -> None:
    pairing = pair_columns(("billing@1:spend", "usage@2:calls", "usage@2:minutes"), LOGGED, 3)
    assert pairing is not None
    assert pairing.columns == (2, 0, 1) and not pairing.by_position
    assert not pairing.unpaired_features and not pairing.unpaired_columns


def test_unversioned_and_bare_names_pair_with_the_one_column_they_name() -> None:
    pairing = pair_columns(("spend", "usage:minutes", "usage@2:calls"), LOGGED, 3)
    assert pairing is not None and pairing.columns == (2, 1, 0)


def test_a_pinned_name_of_another_version_does_not_pair() -> None:
    pairing = pair_columns(("usage@1:calls", "usage@2:minutes", "billing@1:spend"), LOGGED, 3)
    assert pairing is not None and pairing.columns == (None, 1, 2)
    assert "do not name it" in pairing.unpaired_features[0]
    assert pairing.unpaired_columns == {0: NOT_PROFILED}


def test_a_bare_name_two_views_share_is_ambiguous() -> None:
    logged = ("usage@2:amount", "billing@1:amount")
    pairing = pair_columns(("amount", "billing@1:amount"), logged, 2)
    assert pairing is not None and pairing.columns == (None, 1)
    assert "several logged columns" in pairing.unpaired_features[0]
    assert pairing.unpaired_columns == {0: NOT_PROFILED}


def test_one_column_is_compared_with_one_feature_at_most() -> None:
    pairing = pair_columns(("usage@2:calls", "calls", "usage@2:calls"), LOGGED, 3)
    assert pairing is not None and pairing.columns == (0, None, None)
    assert "compared with the feature usage@2:calls" in pairing.unpaired_features[1]
    assert "compared with the feature usage@2:calls" in pairing.unpaired_features[2]
    assert set(pairing.unpaired_columns) == {1, 2}


def test_position_only_where_there_are_no_names() -> None:
    unnamed_log = pair_columns(("a", "b"), (), 2)
    assert unnamed_log is not None and unnamed_log.by_position and unnamed_log.columns == (0, 1)
    assert pair_columns(("a", "b"), (), 3) is None
    unnamed_profile = pair_columns(("f0", "f1", "f2"), LOGGED, 3)
    assert unnamed_profile is not None and unnamed_profile.by_position
    # Names that merely fail to pair are never paired by position.
    named = pair_columns(("x0", "x1", "x2"), LOGGED, 3)
    assert named is not None and not named.by_position and named.compared == 0
    # Names for another width than the logged rows do not describe them.
    assert pair_columns(("usage@2:calls",), LOGGED, 2) is None


def test_evaluate_compares_each_feature_with_its_named_column() -> None:
    rng = np.random.default_rng(3)
    means = np.array([0.0, 50.0, 500.0])  # calls, minutes, spend
    training = rng.normal(means, 1.0, size=(4000, 3))
    profile = build_reference_profile(training[:, [2, 0]])  # spend, calls: minutes not profiled
    window = rng.normal(means, 1.0, size=(500, 3))  # logged in LOGGED order
    verdict = evaluate(profile, ("billing@1:spend", "usage@2:calls"), window, RULE, None, LOGGED)
    assert verdict.status == pb.DRIFT_STATUS_NO_DRIFT
    assert [f.name for f in verdict.features] == ["billing@1:spend", "usage@2:calls", "usage@2:minutes"]
    spend, calls, minutes = verdict.features
    assert (spend.logged_column, calls.logged_column) == ("billing@1:spend", "usage@2:calls")
    assert spend.psi < 0.1 and calls.psi < 0.1 and spend.n_current == 500
    assert minutes.not_compared == NOT_PROFILED and math.isnan(minutes.score) and not minutes.drifted

    shifted = window.copy()
    shifted[:, 0] += 3.0  # calls moves
    drifted = evaluate(profile, ("billing@1:spend", "usage@2:calls"), shifted, RULE, None, LOGGED)
    assert [f.name for f in drifted.features if f.drifted] == ["usage@2:calls"]
    assert drifted.drifted_share == 0.5


def test_evaluate_with_nothing_paired_is_a_schema_mismatch_naming_both_sides() -> None:
    profile = build_reference_profile(np.random.default_rng(4).normal(size=(100, 2)))
    verdict = evaluate(profile, ("x", "y"), np.zeros((50, 3)), RULE, None, LOGGED)
    assert verdict.status == pb.DRIFT_STATUS_SCHEMA_MISMATCH
    assert [f.name for f in verdict.features] == ["x", "y", *LOGGED]
    assert all(f.not_compared for f in verdict.features)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.permutations(range(4)),
    st.sampled_from([pb.DRIFT_TEST_PSI, pb.DRIFT_TEST_KS]),
)
def test_any_column_order_of_the_profile_scores_each_feature_the_same(
    seed: int, order: list[int], test: pb.DriftTest
) -> None:
    """Each named feature gets the scores it gets in model-input order, whatever order the profile's
    columns come in; the verdict is the same."""
    rng = np.random.default_rng(seed)
    names = ("v@1:a", "v@1:b", "v@1:c", "v@1:d")
    means = np.array([0.0, 1.0, 10.0, -5.0])
    training = np.round(rng.normal(means, 1.0, size=(800, 4)), 1)
    window = np.round(rng.normal(means + rng.choice([0.0, 0.5], 4), 1.0, size=(300, 4)), 1)
    window[rng.random(window.shape) < 0.05] = np.nan
    rule = DriftRule(test, 0.2 if test == pb.DRIFT_TEST_PSI else 0.05, RULE.correction, 0.3, 30)
    in_order = evaluate(build_reference_profile(training), names, window, rule, None, names)
    permuted_names = tuple(names[i] for i in order)
    permuted = evaluate(
        build_reference_profile(training[:, order]), permuted_names, window, rule, None, names
    )
    assert (permuted.status, permuted.drifted_share) == (in_order.status, in_order.drifted_share)
    expected = {f.name: f for f in in_order.features}
    assert [f.name for f in permuted.features] == list(permuted_names)
    for feature in permuted.features:
        assert feature == expected[feature.name]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.lists(st.integers(0, 4), min_size=1, max_size=5, unique=True))
def test_a_profile_of_some_features_is_the_profile_of_those_columns(seed: int, chosen: list[int]) -> None:
    rng = np.random.default_rng(seed)
    data = np.round(rng.normal(size=(int(rng.integers(1, 300)), 5)), int(rng.integers(0, 3)))
    data[rng.random(data.shape) < 0.2] = np.nan
    selected = select_features(build_reference_profile(data), chosen)
    direct = build_reference_profile(data[:, chosen])
    for field in ("edges", "bin_counts", "sorted_values", "n_valid", "n_missing", "mean", "m2"):
        np.testing.assert_array_equal(getattr(selected, field), getattr(direct, field), err_msg=field)
