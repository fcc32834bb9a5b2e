"""Lineage both ways over real gRPC, the feature registry's guard, and ``aetherctl lineage``/``models``."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from clients.aether.v1 import model_registry_pb2 as pb
from clients.aether.v1 import types_pb2
from clients.errors import FailedPrecondition, InvalidArgument, NotFound
from clients.sdk.models import ModelRegistryClient
from clients.sdk.registry import FeatureRegistryClient
from control_plane.cli.main import main
from control_plane.offline.historical import get_historical_features
from control_plane.offline.store import OfflineStore
from tests.integration.model_registry.conftest import Plane

QUERY = '{"entity_df": "s3://lake/trips.parquet", "as_of": "event_ts", "features": ["rider_stats@2:trips"]}'


@pytest.fixture
def registered(
    models: ModelRegistryClient, rider_stats: str, make_run: Callable[..., str], tmp_path: Path
) -> tuple[str, str]:
    """eta v1 reads rider_stats@1, eta v2 reads rider_stats@2 (from a tracked run); returns (run id,
    artifact hash)."""
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"weights")
    models.register_version("eta", artifact, feature_refs=["rider_stats@1:trips"])
    run_id = make_run("eta-training", {"lr": "0.05", "depth": "8"})
    version = models.register_version(
        "eta",
        artifact,
        run_id=run_id,
        dataset_hash="feed" * 16,
        dataset_query=QUERY,
        feature_refs=["rider_stats@2:rating", "rider_stats@2:trips"],
        git_commit="0a1b2c3",
    )
    return run_id, version.artifact.sha256


def test_lineage_returns_the_whole_chain(
    plane: Plane, models: ModelRegistryClient, registered: tuple[str, str]
) -> None:
    run_id, _ = registered
    plane.deployments.serving[("eta", 2)] = ["eta-prod"]
    lineage = models.lineage("eta", 2)
    assert [(d.name, d.detail) for d in lineage.deployments] == [("eta-prod", "serves eta version 2")]
    assert (lineage.model_version.model_name, lineage.model_version.version) == ("eta", 2)
    assert (lineage.run.run_id, lineage.run.experiment) == (run_id, "eta-training")
    assert dict(lineage.run.params) == {"lr": "0.05", "depth": "8"}
    assert lineage.run.status
    assert (lineage.dataset.hash, lineage.dataset.query) == ("feed" * 16, QUERY)
    [view] = lineage.feature_views
    assert (view.name, view.version, view.status, view.entity) == (
        "rider_stats",
        2,
        types_pb2.ACTIVE,
        "rider",
    )
    assert (list(view.features_used), view.feature_count, view.owner) == (["rating", "trips"], 2, "growth")
    assert (view.source.kind, view.source.uri) == ("batch", "s3://lake/riders.parquet")

    first = models.lineage("eta", 1)
    assert not first.HasField("run") and list(first.deployments) == []
    assert [(v.name, v.version) for v in first.feature_views] == [("rider_stats", 1)]
    with pytest.raises(NotFound):
        models.lineage("eta", 3)


def test_lineage_shows_the_data_the_training_set_was_built_from(
    plane: Plane,
    models: ModelRegistryClient,
    features: FeatureRegistryClient,
    rider_stats: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A real training set from the control plane's offline store, registered with its hash. Lineage
    showed only the hash, the query and each view's *registered* source (s3://lake/riders.parquet, which
    nothing here read); it now shows the written training set and the offline-store files of each view
    version the join read, and labels the registered source as such."""
    root = Path(os.environ.get("AETHER_OFFLINE_ROOT") or plane.home / "offline")
    store = OfflineStore(str(root))
    at = datetime(2024, 1, 1, 12, tzinfo=UTC)
    rows = pa.table(
        {
            "rider_id": pa.array([1, 2], pa.int64()),
            "event_ts": pa.array([at, at]),
            "ingested_ts": pa.array([at, at]),
            "trips": pa.array([3.0, 4.0], pa.float32()),
            "rating": pa.array([4.5, 4.9], pa.float32()),
        }
    )
    [data_file] = store.write(rider_stats, 2, rows)
    labels = pa.table({"rider_id": pa.array([1, 2], pa.int64()), "event_ts": pa.array([at, at])})
    refs = ["rider_stats@2:trips", "rider_stats@2:rating"]
    output = tmp_path / "datasets" / "train.parquet"
    built = get_historical_features(store, features, labels, refs, output_path=str(output))
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"weights")
    models.register_version(
        "eta", artifact, dataset_hash=built.dataset_hash, dataset_query="{}", feature_refs=refs
    )

    lineage = models.lineage("eta", 1)
    assert lineage.dataset.hash == built.dataset_hash
    materialized = lineage.materialized
    assert (materialized.recorded, materialized.output_path, materialized.row_count) == (True, str(output), 2)
    assert materialized.created_at and len(materialized.entity_rows_sha256) == 64
    [view] = lineage.feature_views
    relative = Path(data_file).relative_to(root).as_posix()
    assert (view.offline_location, view.offline_files) == (f"{root}/rider_stats/v2", 1)
    assert view.offline_files_sha256 == hashlib.sha256(f"{relative}\n".encode()).hexdigest()
    assert (view.source.kind, view.source.uri) == ("batch", "s3://lake/riders.parquet")  # still there

    capsys.readouterr()
    assert run_cli(plane, "lineage", "eta", "1") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "    └── run: none recorded"
    assert lines[3] == f"        └── dataset {built.dataset_hash}, query {{}}"
    assert lines[4].startswith(f"            ├── training set {output} (2 rows, built 20")
    assert lines[5].startswith("            └── feature view rider_stats@2 (")
    assert lines[6] == (
        f"                ├── read from offline store {root}/rider_stats/v2"
        f" (1 file, sha256:{view.offline_files_sha256[:12]})"
    )
    assert lines[7] == "                └── registered source batch s3://lake/riders.parquet"


def test_usages_find_model_versions_by_feature_view_version(
    plane: Plane, models: ModelRegistryClient, registered: tuple[str, str]
) -> None:
    plane.deployments.serving[("eta", 2)] = ["eta-prod"]
    models.approve("eta", 2)
    at_two = models.usages("rider_stats", 2)
    assert [(u.model_name, u.version, list(u.feature_refs)) for u in at_two] == [
        ("eta", 2, ["rider_stats@2:rating", "rider_stats@2:trips"])
    ]
    assert at_two[0].approval_status == pb.APPROVED
    assert [d.name for d in at_two[0].deployments] == ["eta-prod"]
    assert [(u.model_name, u.version) for u in models.usages("rider_stats")] == [("eta", 1), ("eta", 2)]
    with pytest.raises(NotFound):
        models.usages("rider_stats", 5)
    with pytest.raises(NotFound):
        models.usages("no_such_view")


@pytest.mark.parametrize("view", ["", "Rider Stats", "v" * 129])
def test_find_usages_without_a_valid_view_name_is_invalid_argument(
    models: ModelRegistryClient, view: str
) -> None:
    """As a missing or malformed model name is: no view can have such a name, so NOT_FOUND (``feature
    view '' not found``, as FindUsages answered) would say the caller asked for a view that is gone."""
    with pytest.raises(InvalidArgument, match="feature_view: "):
        models.usages(view)


def test_feature_registry_refuses_to_retire_or_delete_what_models_read(
    models: ModelRegistryClient, features: FeatureRegistryClient, registered: tuple[str, str]
) -> None:
    features.deprecate_version("rider_stats", 1)
    with pytest.raises(FailedPrecondition, match="model 'eta' version 1"):
        features.retire_version("rider_stats", 1)
    with pytest.raises(FailedPrecondition, match="model 'eta' version 1, model 'eta' version 2"):
        features.delete_feature_view("rider_stats")
    models.delete_version("eta", 1)
    assert features.retire_version("rider_stats", 1).status == types_pb2.RETIRED
    with pytest.raises(NotFound, match="retired"):  # a retired view version cannot be newly referenced
        models.register_version("eta", artifact_sha256=registered[1], feature_refs=["rider_stats@1:trips"])


def run_cli(plane: Plane, *argv: str) -> int:
    """``aetherctl`` as a user runs it: through ``main``, which turns a usage error into exit status 2."""
    return main(["--control-plane", plane.address, "--timeout", "20", *argv])


def test_cli_lineage_tree_and_usages(
    plane: Plane, registered: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    run_id, _ = registered
    assert run_cli(plane, "lineage", "eta", "2") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "deployments: none"
    assert lines[1].startswith("└── model eta version 2 (PendingManualApproval; artifact sha256:")
    assert lines[2].startswith(f"    └── run {run_id} (experiment eta-training, ")
    assert lines[3] == f"        └── dataset {'feed' * 16}, query {QUERY}"
    assert lines[4] == "            ├── training set: no record of this dataset in the offline store"
    assert lines[5].startswith(
        "            └── feature view rider_stats@2 (ACTIVE, entity rider, owner growth)"
    )
    assert lines[6] == "                ├── read from: not recorded"  # 'feed'*16 is in no offline store
    assert lines[7] == "                └── registered source batch s3://lake/riders.parquet"

    assert run_cli(plane, "lineage", "--feature-view", "rider_stats", "--version", "1") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["MODEL", "VERSION", "APPROVAL", "FEATURES", "DEPLOYMENTS", "PROMOTIONS"]
    assert table[1].split() == ["eta", "1", "PendingManualApproval", "rider_stats@1:trips", "-", "-"]
    assert run_cli(plane, "lineage") == 2
    capsys.readouterr()
    # --version (a feature view's) was ignored without --feature-view: the tree of eta 2 came back as if
    # the flag had narrowed it.
    assert run_cli(plane, "lineage", "eta", "2", "--version", "1") == 2
    out, err = capsys.readouterr()
    assert (out, err) == (
        "",
        "aetherctl: error: --version is a feature view's version: give it with --feature-view\n",
    )


def test_cli_lineage_tree_shows_the_versions_hyperparameters_and_metrics(
    plane: Plane, models: ModelRegistryClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The tree showed the version's approval, artifact and git commit, but neither the hyperparameters
    nor the metrics it was registered with (only ``--json`` had them), and a version registered without a
    run showed no parameters at all."""
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"weights")
    models.register_version(
        "eta", artifact, hyperparameters={"lr": "0.05", "depth": "8"}, metrics={"rmse": 41.5}
    )
    models.register_version("eta", artifact)
    assert run_cli(plane, "lineage", "eta", "1") == 0
    model_line = capsys.readouterr().out.splitlines()[1]
    assert model_line.startswith("└── model eta version 1 (PendingManualApproval; artifact sha256:")
    assert model_line.endswith("; git -; hyperparameters depth=8,lr=0.05; metrics rmse=41.5)")
    assert run_cli(plane, "lineage", "eta", "2") == 0
    assert capsys.readouterr().out.splitlines()[1].endswith("; git -; hyperparameters -; metrics -)")


def test_cli_models_commands(
    plane: Plane, registered: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(plane, "models", "approve", "eta", "2", "--reason", "good") == 0
    assert "Approved by" in capsys.readouterr().out
    assert run_cli(plane, "models", "alias", "eta", "champion", "2") == 0
    assert capsys.readouterr().out.strip() == "eta@champion -> version 2"
    assert run_cli(plane, "models", "list") == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:3] == ["eta", "2", "champion=2"]
    assert run_cli(plane, "models", "versions", "eta", "--status", "approved") == 0
    rows = capsys.readouterr().out.splitlines()
    assert [row.split()[0] for row in rows[1:]] == ["2"]
    assert run_cli(plane, "models", "get", "eta", "--alias", "champion") == 0
    assert "eta version 2" in capsys.readouterr().out
    assert run_cli(plane, "models", "reject", "eta", "1", "--reason", "stale features") == 0
    assert run_cli(plane, "models", "delete", "eta", "1", "--yes") == 0
    assert "deleted" in capsys.readouterr().out


def test_cli_models_commands_print_json_with_json(
    plane: Plane, registered: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # approve/reject, alias and delete accepted --json and printed their sentence anyway.
    assert run_cli(plane, "models", "approve", "eta", "2", "--reason", "good", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    # int64 fields are JSON numbers, as in the delete line below (proto3's mapping writes strings).
    assert (shown["version"], shown["approval"]["reason"]) == (2, "good")
    assert run_cli(plane, "models", "reject", "eta", "1", "--reason", "old", "--json") == 0
    assert json.loads(capsys.readouterr().out)["version"] == 1
    assert run_cli(plane, "models", "alias", "eta", "champion", "2", "--json") == 0
    assert json.loads(capsys.readouterr().out)["aliases"] == ["champion"]
    assert run_cli(plane, "models", "alias", "eta", "champion", "--delete", "--json", "--yes") == 0
    assert json.loads(capsys.readouterr().out) == {"deleted": {"model": "eta", "alias": "champion"}}
    assert run_cli(plane, "models", "delete", "eta", "1", "--json", "--yes") == 0
    assert json.loads(capsys.readouterr().out) == {"deleted": {"model": "eta", "version": 1}}


def test_cli_models_delete_without_yes_and_no_terminal_is_refused_and_deletes_nothing(
    plane: Plane, registered: tuple[str, str], models: ModelRegistryClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """delete removed a version (or a model) at once, where ``features delete`` asks (or, with no
    terminal to ask on, wants ``--yes``)."""
    for argv, what in [(["eta", "1"], "version 1 of model 'eta'"), (["eta"], "model 'eta'")]:
        code = main(["--control-plane", plane.address, "models", "delete", *argv])
        out, err = capsys.readouterr()
        assert (code, out) == (2, "")
        assert f"refusing to delete {what} without --yes" in err and "pass --yes" in err, err
    assert [version.version for version in models.list_versions("eta")] == [1, 2]

    assert run_cli(plane, "models", "delete", "eta", "1", "--yes") == 0
    assert capsys.readouterr().out == "model eta version 1 deleted\n"
    assert [version.version for version in models.list_versions("eta")] == [2]
