"""Reference profiles: built from numpy or Arrow tables, stored content-addressed, linked to a version,
compacted for large references; the trainer's run-tag link is found too."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import model_registry_pb2 as mpb
from clients.aether.v1 import monitoring_pb2 as pb
from clients.errors import DataLoss, InvalidArgument, NotFound
from control_plane.artifacts.store import ArtifactStore
from control_plane.db import read_session
from control_plane.monitoring.config import effective
from control_plane.monitoring.profiles import (
    ReferenceCache,
    as_feature_matrix,
    compact,
    link_reference_profile,
    load_profile,
    register_reference_profile,
    resolve_reference,
)
from control_plane.monitoring.scoring import score_window
from control_plane.monitoring.windows import Window
from kernels.drift import build_reference_profile, drift_scores
from tests.unit.monitoring.conftest import register_version


def test_register_stores_the_profile_and_links_it_to_the_version(
    sessions: sessionmaker[Session], store: ArtifactStore
) -> None:
    version = register_version(sessions, store, "churn")
    table = pa.table({"age": [30.0, None, 50.0] * 40, "income": list(range(120)), "ignored": ["x"] * 120})
    info = register_reference_profile(
        sessions,
        store,
        "churn",
        version,
        table,
        ["age", "income"],
        outputs=np.linspace(0, 1, 120),
        actor="trainer",
    )
    assert list(info.feature_names) == ["age", "income"] and info.n_rows == 120
    assert info.output_artifact_sha256 and list(info.output_names) == ["f0"]
    profile, names = load_profile(store, info.artifact_sha256)
    assert names == ("age", "income") and list(profile.n_missing) == [40, 0]
    with read_session(sessions) as session:
        resolved = resolve_reference(session, "churn", version)
    assert resolved is not None and resolved.artifact_sha256 == info.artifact_sha256
    loaded = ReferenceCache(sessions, store).get("churn", version)
    assert loaded.features is not None and loaded.features[1] == ("age", "income")
    assert loaded.outputs is not None


def test_unknown_versions_and_blobs_that_are_not_profiles_are_refused(
    sessions: sessionmaker[Session], store: ArtifactStore
) -> None:
    with pytest.raises(NotFound):
        register_reference_profile(sessions, store, "nope", 1, np.zeros((40, 2)), actor="t")
    version = register_version(sessions, store, "eta")
    junk = store.put_bytes(b"not a profile").sha256
    with pytest.raises(InvalidArgument, match="is not a reference profile"):
        link_reference_profile(sessions, store, "eta", version, junk, actor="t")
    assert ReferenceCache(sessions, store).get("eta", version).features is None


def test_naming_what_is_not_a_profile_is_invalid_and_an_unknown_version_not_found_first(
    sessions: sessionmaker[Session], store: ArtifactStore
) -> None:
    """Naming a blob that is not a profile was DATA_LOSS with numpy's "pickled data ... allow_pickle"
    advice, and it was checked before the version, so an unknown version was DATA_LOSS as well."""
    version = register_version(sessions, store, "eta")
    onnx = store.put_bytes(b"\x08\x07pretend this is an onnx model" * 10).sha256
    with pytest.raises(NotFound, match="model version nosuchmodel/7 not found"):
        link_reference_profile(sessions, store, "nosuchmodel", 7, onnx, actor="t")
    with pytest.raises(NotFound, match="model version eta/9 not found"):
        link_reference_profile(sessions, store, "eta", 9, onnx, actor="t")
    with pytest.raises(InvalidArgument) as refused:
        link_reference_profile(sessions, store, "eta", version, onnx, actor="t")
    message = str(refused.value)
    assert f"artifact_sha256 sha256:{onnx} is not a reference profile" in message
    assert "are not an .npz archive" in message and "a profile is an .npz archive" in message
    assert "pickle" not in message
    archive = io.BytesIO()
    np.savez(archive, weights=np.zeros(3))
    other = store.put_bytes(archive.getvalue()).sha256
    good = register_reference_profile(sessions, store, "eta", version, np.zeros((40, 2)), actor="t")
    with pytest.raises(InvalidArgument, match=r"output_artifact_sha256 .* has no 'format' array"):
        link_reference_profile(sessions, store, "eta", version, good.artifact_sha256, other, actor="t")
    # Loss is left to bytes that no longer match their sha256.
    Path(store.location(good.artifact_sha256)).write_bytes(b"changed on disk")
    with pytest.raises(DataLoss, match="corrupt"):
        link_reference_profile(sessions, store, "eta", version, good.artifact_sha256, actor="t")


def test_a_version_beyond_the_version_column_is_invalid_on_every_backend(
    sessions: sessionmaker[Session], store: ArtifactStore
) -> None:
    """RegisterReferenceProfile's version is an int64; the column is 32 bits. PostgreSQL refused to
    compare a larger one (INTERNAL) where SQLite said NOT_FOUND."""
    register_version(sessions, store, "eta")
    with pytest.raises(InvalidArgument, match=r"version: .* from 1 to 2147483647, got 3000000000"):
        register_reference_profile(sessions, store, "eta", 3_000_000_000, np.zeros((40, 2)), actor="t")


def test_compaction_keeps_the_empirical_cdf_within_one_over_max_values() -> None:
    reference = np.random.default_rng(0).normal(size=(50_000, 2))
    full = build_reference_profile(reference)
    small = compact(full, max_values=1000)
    assert small.sorted_values.shape == (2, 1000) and list(small.n_valid) == [1000, 1000]
    np.testing.assert_array_equal(small.bin_counts, full.bin_counts)
    current = np.random.default_rng(1).normal(size=(2000, 2))
    exact = drift_scores(full, current).ks_statistic
    approx = drift_scores(small, current).ks_statistic
    assert np.all(np.abs(exact - approx) <= 1 / 1000 + 1e-12)


def test_compaction_keeps_the_whole_references_spread_and_row_count(
    sessions: sessionmaker[Session], store: ArtifactStore
) -> None:
    """The Wasserstein score is normalised by the reference's standard deviation: compacting the sample
    must not change it (it used to grow by sqrt(N / max_values), shrinking the score), and the linked
    row count is the reference's, not the kept sample's."""
    rng = np.random.default_rng(2)
    reference = rng.normal(0.0, 2.0, size=(40_000, 2))
    reference[:1000, 1] = np.nan
    full = build_reference_profile(reference)
    small = compact(full, max_values=1000)
    np.testing.assert_allclose(small.std, full.std, rtol=1e-12)
    np.testing.assert_allclose(small.std, np.nanstd(reference, axis=0), rtol=1e-9)
    current = rng.normal(0.5, 2.0, size=(3000, 2))
    exact = drift_scores(full, current).wasserstein
    approx = drift_scores(small, current).wasserstein
    np.testing.assert_allclose(approx, exact, rtol=0.05)  # the kept order statistics move the CDF a little
    version = register_version(sessions, store, "big")
    info = register_reference_profile(sessions, store, "big", version, reference, actor="t", max_values=1000)
    assert info.n_rows == 40_000
    stored, _ = load_profile(store, info.artifact_sha256)
    assert list(stored.n_valid) == [1000, 1000] and list(stored.n_missing) == [0, 1000]
    np.testing.assert_allclose(stored.std, full.std, rtol=1e-12)


def test_feature_tables_from_mappings_and_arrays_name_their_columns() -> None:
    matrix, names = as_feature_matrix({"a": [1, 2], "b": [3.0, float("nan")]})
    assert names == ("a", "b") and matrix.shape == (2, 2) and np.isnan(matrix[1, 1])
    assert as_feature_matrix(np.zeros((3, 2)))[1] == ("f0", "f1")


def test_a_version_the_built_in_trainer_registered_is_found_through_its_run_tag(
    sessions: sessionmaker[Session], store: ArtifactStore
) -> None:
    from clients.aether.v1 import model_registry_pb2 as mpb
    from control_plane.model_registry.registry import ModelRegistry
    from control_plane.tracking.store import TrackingStore
    from control_plane.training.reference import SHA_TAG, build_profile, profile_to_bytes

    # What control_plane/training/trainer/register.py does: upload the profile, tag the run with it.
    blob = profile_to_bytes(build_profile(np.random.default_rng(0).normal(size=(100, 2))), ["a", "b"])
    sha = store.put_bytes(blob).sha256
    tracking = TrackingStore(sessions)
    experiment = tracking.create_experiment("training", actor="t")
    run = tracking.create_run(experiment.experiment_id, tags={SHA_TAG: sha}, actor="t")
    model = store.put_bytes(b"onnx").sha256
    version = (
        ModelRegistry(sessions, store)
        .create_version(
            mpb.CreateModelVersionRequest(
                model_name="m", run_id=run.run_id, artifact_sha256=model, create_model=True
            ),
            actor="t",
        )
        .version
    )
    with read_session(sessions) as session:
        info = resolve_reference(session, "m", version)
    assert info is not None and info.artifact_sha256 == sha
    loaded = ReferenceCache(sessions, store).get("m", version)
    assert loaded.features is not None and loaded.features[1] == ("a", "b") and loaded.outputs is None


def test_a_profile_is_rounded_to_the_dtype_its_version_is_served_in(
    sessions: sessionmaker[Session], store: ArtifactStore
) -> None:
    """Profiles are built in float64 from the offline table; a float32 model is fed (and logs) float32.
    The cache rounds the profile once, at load, to the signature's dtype: old profiles too."""
    signature = mpb.ModelSignature(
        inputs=[mpb.TensorSpec(name="x", dtype="float32", shape=[-1, 2])],
        outputs=[mpb.TensorSpec(name="score", dtype="float32", shape=[-1, 1])],
    )
    version = register_version(sessions, store, "churn", signature=signature)
    plain = register_version(sessions, store, "plain")
    rng = np.random.default_rng(0)
    training = {"rate": rng.choice([0.1, 0.3], 500), "const": np.full(500, 2.7)}
    outputs = rng.choice([0.2, 0.7], 500)
    register_reference_profile(sessions, store, "churn", version, training, outputs=outputs, actor="t")
    register_reference_profile(sessions, store, "plain", plain, training, actor="t")
    cache = ReferenceCache(sessions, store)
    loaded = cache.get("churn", version)
    assert (loaded.feature_dtype, loaded.output_dtype) == ("float32", "float32")
    assert loaded.features is not None and loaded.outputs is not None
    for profile, _ in (loaded.features, loaded.outputs):
        finite = profile.sorted_values[~np.isnan(profile.sorted_values)]
        assert np.array_equal(finite, finite.astype(np.float32).astype(np.float64))
    assert set(np.unique(loaded.features[0].sorted_values[0])) == {float(np.float32(v)) for v in (0.1, 0.3)}
    unknown = cache.get("plain", plain)
    assert unknown.feature_dtype == "" and unknown.features is not None
    assert unknown.features[0].sorted_values[1, 0] == 2.7  # no signature: as built

    # Scored as the monitor does: a window logged as float64 against the float32 model drifts not.
    window = np.column_stack([rng.choice([0.1, 0.3], 300), np.full(300, 2.7)])
    config = effective(pb.MonitorConfig(deployment="d"))
    batch = Window(0, 1, window, outputs=rng.choice([0.2, 0.7], (300, 1)))
    report, _ = score_window(
        ("d", "churn", version),
        batch,
        config,
        loaded.features,
        loaded.outputs,
        None,
        "score",
        "float32",
        "float32",
    )
    assert (report.status, report.prediction_status) == (pb.DRIFT_STATUS_NO_DRIFT, pb.DRIFT_STATUS_NO_DRIFT)
