"""A model version's feature references against its training set, over real gRPC: the set's record in the
control plane's offline store says which view versions and features it was read from, and a version must
name only those (they are what Predict reads for it)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from clients.errors import FailedPrecondition, NotFound
from clients.sdk.models import ModelRegistryClient
from clients.sdk.registry import FeatureRegistryClient
from control_plane.offline.historical import get_historical_features
from control_plane.offline.store import OfflineStore
from tests.integration.model_registry.conftest import Plane


def test_a_version_must_read_the_view_versions_its_training_set_was_built_from(
    plane: Plane,
    models: ModelRegistryClient,
    features: FeatureRegistryClient,
    rider_stats: str,
    tmp_path: Path,
) -> None:
    """A version registered with a recorded training set must name the view versions (and features) that
    set was read from: those are what it serves. Registered with ``rider_stats@2`` after training on
    version 1 (the newest when the set was built), it was accepted, and Predict read version 2 for it: a
    version still empty (NOT_FOUND), or one whose values the model never saw."""
    root = Path(os.environ.get("AETHER_OFFLINE_ROOT") or plane.home / "offline")
    store = OfflineStore(str(root))
    at = datetime(2024, 1, 1, 12, tzinfo=UTC)
    rows = pa.table(
        {
            "rider_id": pa.array([1, 2], pa.int64()),
            "event_ts": pa.array([at, at]),
            "ingested_ts": pa.array([at, at]),
            "trips": pa.array([3.0, 4.0], pa.float32()),
        }
    )
    store.write(rider_stats, 1, rows)
    labels = pa.table({"rider_id": pa.array([1, 2], pa.int64()), "event_ts": pa.array([at, at])})
    trained_on = ["rider_stats@1:trips"]
    built = get_historical_features(
        store, features, labels, trained_on, output_path=str(tmp_path / "t.parquet")
    )
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"weights")

    for refs, says in [
        (["rider_stats@2:trips"], "'rider_stats@2:trips' names feature view 'rider_stats' version 2"),
        (["rider_stats@1:trips", "rider_stats@2:rating"], "'rider_stats@2:rating'"),
    ]:
        with pytest.raises(FailedPrecondition, match=says) as refused:
            models.register_version("eta", artifact, dataset_hash=built.dataset_hash, feature_refs=refs)
        assert f"training set {built.dataset_hash}" in str(refused.value)
        assert "read rider_stats@1 (trips)" in str(refused.value)
    with pytest.raises(NotFound):  # nothing was registered, not even the model
        models.get_model("eta")

    registered = models.register_version(
        "eta", artifact, dataset_hash=built.dataset_hash, feature_refs=trained_on
    )
    assert list(registered.feature_refs) == trained_on
