"""The SDK's dataset loading, and the built-in trainer end to end as a job subprocess: feature-store
data in, a registered model version out, with its complete lineage, the ONNX check passed, metrics
tracked and the drift reference linked."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from clients.errors import DataLoss, NotFound
from clients.sdk.models import ModelRegistryClient
from clients.sdk.offline import OfflineFeaturesClient
from clients.sdk.tracking import TrackingClient
from control_plane.offline.store import OfflineStore
from control_plane.training.dataset import TrainingData, load_training_data, read_recorded_dataset
from control_plane.training.reference import RUN_ARTIFACT_NAME, SHA_TAG, profile_from_bytes
from control_plane.training.spec import DatasetRef
from control_plane.training.trainer.register import git_commit
from tests.integration.training.conftest import FEATURES, Data, Plane, make_job


def test_classifier_is_registered_with_its_lineage(plane: Plane, data: Data, tmp_path: Path) -> None:
    hyperparameters = {
        "task": "classification",
        "label": "churned",
        "epochs": 6,
        "hidden": [16],
        "seed": 3,
        "lr": 0.01,
        "batch_size": 64,
    }
    job = make_job(plane, data, tmp_path, "churn-classifier", hyperparameters)
    assert job.run(plane) == 0, job.log()

    outputs = json.loads(job.outputs_path.read_text())
    assert (outputs["model"], outputs["version"]) == ("churn-classifier", 1)
    assert outputs["onnx_max_abs_diff"] <= 1e-4
    with ModelRegistryClient(plane.address) as models:
        lineage = models.lineage("churn-classifier", 1)
        onnx_bytes = models.artifacts.download_bytes(lineage.model_version.artifact.sha256)
    version = lineage.model_version
    pinned = [f"stats@{data.version}:{feature}" for feature in FEATURES]
    assert lineage.dataset.hash == outputs["dataset_hash"] and len(lineage.dataset.hash) == 64
    assert json.loads(lineage.dataset.query)["features"] == pinned
    assert json.loads(lineage.dataset.query)["entity_rows_path"] == str(data.entity_rows_path)
    assert list(version.feature_refs) == pinned
    [view] = lineage.feature_views
    assert (view.name, view.version, sorted(view.features_used)) == ("stats", data.version, sorted(FEATURES))
    # The data the set was built from, from its record in the offline store (the job did not write it out).
    assert lineage.materialized.recorded and lineage.materialized.output_path == ""
    assert view.offline_location.endswith(f"/stats/v{data.version}") and view.offline_files >= 1
    assert lineage.run.run_id == job.run_id and lineage.run.experiment == "churn-classifier"
    assert version.hyperparameters["task"] == "classification" and version.hyperparameters["hidden"] == "16"
    assert version.hyperparameters["weight_decay"] == "0.0"  # defaults are recorded too
    assert set(version.metrics) == {"accuracy", "auc", "logloss"}
    assert version.metrics["accuracy"] > 0.8  # the label is a linear rule of two features
    assert version.git_commit == git_commit() and len(version.git_commit) == 40
    assert [(t.name, t.dtype, list(t.shape)) for t in version.signature.inputs] == [
        ("features", "float32", [-1, 4])
    ]
    assert [(t.name, list(t.shape)) for t in version.signature.outputs] == [("probabilities", [-1, 2])]
    assert version.signature.imputes_missing  # the graph imputes NaN: serving must feed missing as NaN

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    raw = np.array([[2.0, 2.0, 0.0, np.nan], [-2.0, -2.0, 0.0, 0.0]], dtype=np.float32)
    (probabilities,) = session.run(None, {"features": raw})
    classes = json.loads(session.get_modelmeta().custom_metadata_map["aether.classes"])
    assert classes == ["no", "yes"]
    assert list(version.signature.classes) == classes  # what the monitor maps the outputs through
    assert list(np.argmax(probabilities, axis=1)) == [1, 0]  # missing values are imputed in the graph

    with TrackingClient(plane.address) as tracking:
        history = tracking.metric_history(job.run_id, "train_loss")
        artifacts = {a.name: a.sha256 for a in tracking.list_artifacts(job.run_id)}
        run = tracking.get_run(job.run_id)
        reference = ModelRegistryClient(plane.address).artifacts.download_bytes(artifacts[RUN_ARTIFACT_NAME])
    assert list(history.steps) == list(range(6))
    assert history.values[-1] < history.values[0]
    assert run.tags[SHA_TAG] == artifacts[RUN_ARTIFACT_NAME] == outputs["reference_profile_sha256"]
    assert outputs["reference_profile_sha256"] in version.description
    profile, names = profile_from_bytes(reference)
    assert names == tuple(pinned)
    assert int(profile.n_valid[0]) + int(profile.n_missing[0]) == 1600  # the 80% training rows
    assert int(profile.n_missing[3]) > 0  # missing values are counted, not dropped silently


def test_an_attempt_that_died_after_registering_is_not_registered_twice(
    plane: Plane, data: Data, tmp_path: Path
) -> None:
    """An attempt killed after its registration but before it wrote its outputs: the next attempt of the
    job (same run) finds the version instead of registering a second one."""
    job = make_job(plane, data, tmp_path, "once", {"label": "y", "epochs": 2, "hidden": [4], "seed": 1})
    assert job.run(plane) == 0, job.log()
    job.outputs_path.unlink()  # what the death left behind: a registered version, no outputs
    assert job.run(plane, attempt=2) == 0, job.log()
    assert json.loads(job.outputs_path.read_text())["version"] == 1
    with ModelRegistryClient(plane.address) as models:
        assert [v.version for v in models.list_versions("once")] == [1]
    assert "already registered version 1" in job.log()


def test_dataset_by_query_pins_versions_and_by_hash_reads_the_recorded_copy(
    plane: Plane, data: Data, tmp_path: Path
) -> None:
    query = DatasetRef(entity_rows_path=str(data.entity_rows_path), features=("stats:x2", "stats"))
    built = load_training_data(plane.address, query)
    pinned = tuple(f"stats@{data.version}:{f}" for f in ("x2", "x1", "x3", "x4"))
    assert built.feature_columns == built.feature_refs == pinned  # unversioned refs pinned, view expanded
    assert built.num_rows == data.rows and built.numpy().shape == (data.rows, 4)
    assert torch_shape(built) == (data.rows, 4)

    with pytest.raises(DataLoss, match="expects"):
        load_training_data(plane.address, replace(query, dataset_hash="0" * 64))

    # A set written with an output path (other features than above: the first record of a hash wins).
    copy = plane.home / "datasets" / "train.parquet"  # the server writes under its datasets root only
    subset = pinned[:2]
    with OfflineFeaturesClient(plane.address) as offline:
        written = offline.historical_features(str(data.entity_rows_path), subset, output_path=str(copy))
    by_hash = read_recorded_dataset(written.dataset_hash, OfflineStore(str(plane.home / "offline")))
    assert by_hash.dataset_hash == written.dataset_hash and by_hash.table.equals(written.table)
    assert by_hash.feature_refs == by_hash.feature_columns == subset
    with pytest.raises(NotFound):
        read_recorded_dataset("f" * 64, OfflineStore(str(plane.home / "offline")))


def torch_shape(data: TrainingData) -> tuple[int, ...]:
    return tuple(data.torch().shape)
