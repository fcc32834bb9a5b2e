"""Window verdicts: no drift on the reference distribution, drift on exactly the shifted features,
insufficient data never drifts, NaN counted."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.monitoring.config import default_config, effective
from control_plane.monitoring.drift import DriftRule, evaluate
from control_plane.monitoring.entries import decode_entry
from control_plane.monitoring.profiles import profile_blob
from control_plane.training.reference import profile_from_bytes
from kernels.drift import ReferenceProfile, benjamini_hochberg, build_reference_profile
from tests.unit.monitoring.world import entry

N_FEATURES = 10
NAMES = tuple(f"x{i}" for i in range(N_FEATURES))


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    reference = np.random.default_rng(1).normal(size=(20_000, N_FEATURES))
    return build_reference_profile(reference)


def rule(test: int = pb.DRIFT_TEST_PSI, **fields: object) -> DriftRule:
    return DriftRule.of(effective(pb.MonitorConfig(deployment="d", test=test, **fields)))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "test", [pb.DRIFT_TEST_PSI, pb.DRIFT_TEST_JSD, pb.DRIFT_TEST_KS, pb.DRIFT_TEST_WASSERSTEIN]
)
def test_a_window_from_the_reference_distribution_does_not_drift(
    profile: ReferenceProfile, test: int
) -> None:
    window = np.random.default_rng(2).normal(size=(2000, N_FEATURES))
    verdict = evaluate(profile, NAMES, window, rule(test))
    assert verdict.status == pb.DRIFT_STATUS_NO_DRIFT
    assert not any(f.drifted for f in verdict.features)
    assert [f.name for f in verdict.features] == list(NAMES)


@pytest.mark.parametrize(
    "test", [pb.DRIFT_TEST_PSI, pb.DRIFT_TEST_JSD, pb.DRIFT_TEST_KS, pb.DRIFT_TEST_WASSERSTEIN]
)
def test_a_shifted_window_drifts_on_the_shifted_features_only(profile: ReferenceProfile, test: int) -> None:
    window = np.random.default_rng(3).normal(size=(2000, N_FEATURES))
    shifted = [1, 4, 7, 8]
    window[:, shifted] += 1.0
    verdict = evaluate(profile, NAMES, window, rule(test))
    assert [i for i, f in enumerate(verdict.features) if f.drifted] == shifted
    assert verdict.drifted_share == pytest.approx(0.4)
    assert verdict.status == pb.DRIFT_STATUS_DRIFT


def test_one_drifted_feature_of_ten_is_below_the_default_dataset_share(profile: ReferenceProfile) -> None:
    window = np.random.default_rng(4).normal(size=(2000, N_FEATURES))
    window[:, 0] += 2.0
    verdict = evaluate(profile, NAMES, window, rule())
    assert verdict.features[0].drifted and verdict.drifted_share == pytest.approx(0.1)
    assert verdict.status == pb.DRIFT_STATUS_NO_DRIFT


def test_ks_flags_use_benjamini_hochberg_adjusted_pvalues(profile: ReferenceProfile) -> None:
    window = np.random.default_rng(5).normal(size=(300, N_FEATURES))
    window[:, 2] += 0.3
    verdict = evaluate(profile, NAMES, window, rule(pb.DRIFT_TEST_KS))
    raw = np.array([f.ks_pvalue for f in verdict.features])
    expected = benjamini_hochberg(raw)
    np.testing.assert_allclose([f.ks_pvalue_adjusted for f in verdict.features], expected)
    assert [f.drifted for f in verdict.features] == list(expected < 0.05)
    uncorrected = evaluate(
        profile, NAMES, window, rule(pb.DRIFT_TEST_KS, correction=pb.MULTIPLE_TESTING_CORRECTION_NONE)
    )
    assert [f.score for f in uncorrected.features] == pytest.approx(list(raw))


def test_too_few_samples_is_insufficient_data_never_drift(profile: ReferenceProfile) -> None:
    window = np.random.default_rng(6).normal(size=(10, N_FEATURES)) + 5.0  # far off, but only 10 rows
    verdict = evaluate(profile, NAMES, window, rule())
    assert verdict.status == pb.DRIFT_STATUS_INSUFFICIENT_DATA
    assert all(f.insufficient and not f.drifted and np.isnan(f.score) for f in verdict.features)


def test_nan_values_are_counted_and_left_out_of_the_scores(profile: ReferenceProfile) -> None:
    window = np.random.default_rng(7).normal(size=(500, N_FEATURES))
    window[:480, 3] = np.nan  # 20 finite values left: below min_samples for that feature only
    window[:100, 5] = np.inf
    verdict = evaluate(profile, NAMES, window, rule())
    assert verdict.features[3].missing_current == 480 and verdict.features[3].insufficient
    assert verdict.features[5].missing_current == 100 and verdict.features[5].n_current == 400
    assert not verdict.features[5].drifted and np.isfinite(verdict.features[5].score)
    assert verdict.status == pb.DRIFT_STATUS_NO_DRIFT


def test_a_window_with_another_feature_count_is_a_schema_mismatch(profile: ReferenceProfile) -> None:
    verdict = evaluate(profile, NAMES, np.zeros((100, 3)), rule())
    assert verdict.status == pb.DRIFT_STATUS_SCHEMA_MISMATCH


def test_defaults_are_the_documented_ones() -> None:
    config = default_config("d")
    assert (config.test, config.threshold, config.drift_share) == (pb.DRIFT_TEST_PSI, 0.2, 0.3)
    assert config.correction == pb.MULTIPLE_TESTING_CORRECTION_BENJAMINI_HOCHBERG
    assert (config.window_kind, config.window_rows, config.min_samples) == (pb.WINDOW_KIND_COUNT, 1000, 30)
    assert effective(pb.MonitorConfig(deployment="d", test=pb.DRIFT_TEST_JSD)).threshold == 0.1
    assert effective(pb.MonitorConfig(deployment="d", test=pb.DRIFT_TEST_KS)).threshold == 0.05


@pytest.mark.parametrize("test", [pb.DRIFT_TEST_PSI, pb.DRIFT_TEST_JSD])
def test_point_masses_moving_up_drift_with_the_default_binned_tests(test: int) -> None:
    """The reviewer's case: a 0/1 flag from 5 % to 90 % ones, a constant 3 that jumps to 7 (up) or to 1
    (down). Every one drifts with the default PSI and JSD rules, not only the move down."""
    rng = np.random.default_rng(0)
    n = 5000
    reference = np.column_stack([(rng.random(n) < 0.05).astype(float), np.full(n, 3.0), np.full(n, 3.0)])
    current = np.column_stack([(rng.random(n) < 0.90).astype(float), np.full(n, 7.0), np.full(n, 1.0)])
    verdict = evaluate(build_reference_profile(reference), ("flag", "c_up", "c_down"), current, rule(test))
    assert verdict.status == pb.DRIFT_STATUS_DRIFT
    assert [(f.name, f.drifted) for f in verdict.features] == [
        ("flag", True),
        ("c_up", True),
        ("c_down", True),
    ]


# ---------------------------------------------------------------------------- the served precision
ALL_TESTS = (pb.DRIFT_TEST_PSI, pb.DRIFT_TEST_JSD, pb.DRIFT_TEST_KS, pb.DRIFT_TEST_WASSERSTEIN)


def logged(values: np.ndarray) -> np.ndarray:
    """``values`` as the monitor reads them from a prediction-log entry written with their dtype."""
    fields = entry(0)
    fields[b"features"] = values.tobytes()
    fields[b"features_dtype"] = values.dtype.name.encode()
    fields[b"features_shape"] = f"{values.shape[0]},{values.shape[1]}".encode()
    decoded = decode_entry(fields)
    assert decoded is not None and decoded.features is not None
    return decoded.features


def test_an_unchanged_feature_logged_as_float32_does_not_drift_against_its_float64_reference() -> None:
    """The reference profile is built in float64 from the offline table; a float32 model's input is
    logged as float32. 0.1, 0.3 and 2.7 are no float32: the float64 reference put each on a point-mass
    bin [v, nextafter(v)) that the served float32(v) missed, and every test read drift (PSI ≈ 17-18,
    JSD = 1, KS p ≈ 0) on identical distributions."""
    rng = np.random.default_rng(0)
    n = 2000
    training = {"rate": rng.choice([0.1, 0.3], n), "const": np.full(n, 2.7)}
    reference, names = profile_from_bytes(profile_blob(training)[0])
    served = np.column_stack([rng.choice([0.1, 0.3], 1000), np.full(1000, 2.7)]).astype(np.float32)
    window = logged(served)
    for test in ALL_TESTS:
        verdict = evaluate(reference, names, window, rule(test))
        scores = {f.name: round(f.score, 4) for f in verdict.features}
        assert verdict.status == pb.DRIFT_STATUS_NO_DRIFT, (pb.DriftTest.Name(test), scores)
        # Given as the model's signature, the precision rounds a float64-logged window the same way.
        as_float64 = logged(served.astype(np.float64) + np.float64(1e-12))
        assert (
            evaluate(reference, names, as_float64, rule(test), "float32").status == pb.DRIFT_STATUS_NO_DRIFT
        )
    # A real move still drifts at float32.
    moved = served.copy()
    moved[:, 0] = np.float32(0.3)
    assert evaluate(reference, names, logged(moved), rule()).status == pb.DRIFT_STATUS_DRIFT


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_features=st.integers(1, 4),
    levels=st.integers(1, 12),
    scale=st.sampled_from([1e-3, 0.1, 1.0, 7.3, 1e5]),
)
def test_any_float64_reference_cast_to_float32_reads_as_no_drift(
    seed: int, n_features: int, levels: int, scale: float
) -> None:
    """For random float64 training data (a few point masses, or continuous), a profile built through
    profile_blob and the same data served as float32 never reads as drift, whether the window is logged
    as float32 or as float64 against a float32 signature."""
    rng = np.random.default_rng(seed)
    n = 600
    columns = []
    for f in range(n_features):
        if (seed + f) % 2:
            columns.append(rng.choice(rng.normal(size=levels) * scale, n))
        else:
            columns.append(rng.normal(size=n) * scale)
    training = np.column_stack(columns)
    reference, names = profile_from_bytes(profile_blob(training)[0])
    served = training.astype(np.float32)
    windows = ((logged(served), None), (served.astype(np.float64), "float32"), (training, "float32"))
    for window, precision in windows:
        for test in ALL_TESTS:
            verdict = evaluate(reference, names, window, rule(test), precision)
            assert verdict.status == pb.DRIFT_STATUS_NO_DRIFT, pb.DriftTest.Name(test)
        scores = verdict.features
        assert all(f.psi < 1e-9 and f.jensen_shannon < 1e-9 and f.ks_pvalue > 0.99 for f in scores)
