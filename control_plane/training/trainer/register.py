"""Registration of the trained model with its complete lineage, and the drift reference profile.

The version records: the dataset hash and the point-in-time query that built it, the pinned feature refs,
every effective hyperparameter, the held-out metrics, the git commit of the training code, the run, and
the input/output signature. The reference profile is linked as described in :mod:`..reference`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from clients.aether.v1 import model_registry_pb2 as pb
from clients.errors import NotFound
from clients.sdk.models import ModelRegistryClient, signature
from control_plane.training.context import TrainingContext
from control_plane.training.dataset import TrainingData
from control_plane.training.reference import RUN_ARTIFACT_NAME, SHA_TAG, build_profile, profile_to_bytes
from control_plane.training.trainer.config import TrainerConfig
from control_plane.training.trainer.data import PreparedData
from control_plane.training.trainer.export import INPUT_NAME

UNKNOWN_COMMIT = "unknown"


def git_commit(path: Path | None = None) -> str:
    """``git rev-parse HEAD`` of the repository holding ``path`` (default: this training code), or
    ``"unknown"`` outside a repository or without git."""
    folder = path if path is not None else Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return UNKNOWN_COMMIT
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else UNKNOWN_COMMIT


def output_tensor(config: TrainerConfig) -> str:
    return "probabilities" if config.task == "classification" else "prediction"


@dataclass(frozen=True)
class Registered:
    version: pb.ModelVersion
    reference_profile_sha256: str


def log_reference_profile(ctx: TrainingContext, prepared: PreparedData, folder: Path) -> str:
    """Builds the reference profile over the training features, logs it as a run artifact (uploading it
    to the artifact store) and tags the run with its sha256, which it returns."""
    profile = build_profile(prepared.x_train.numpy())
    path = folder / RUN_ARTIFACT_NAME
    path.write_bytes(profile_to_bytes(profile, prepared.feature_names))
    artifact = ctx.metrics.run.log_artifact(path, name=RUN_ARTIFACT_NAME)
    ctx.metrics.set_tags({SHA_TAG: artifact.sha256})
    return str(artifact.sha256)


def register_model(
    ctx: TrainingContext,
    config: TrainerConfig,
    data: TrainingData,
    prepared: PreparedData,
    onnx_path: Path,
    metrics: Mapping[str, float],
) -> Registered:
    profile_sha = log_reference_profile(ctx, prepared, onnx_path.parent)
    ctx.metrics.flush()  # the run (and its params) must be on the server before the version names it
    n_outputs = prepared.n_outputs
    with ModelRegistryClient(
        ctx.launch.control_plane_addr, actor=f"job:{ctx.job_id}", timeout=60
    ) as registry:
        earlier = _registered_by_run(registry, config.model_name, ctx.run_id)
        if earlier is not None:
            # An earlier attempt of this job registered it and died before writing its outputs: the
            # job's one run gets one version, not one per attempt.
            print(f"run {ctx.run_id} already registered version {earlier.version}; not registering again")
            return Registered(earlier, profile_sha)
        version = registry.register_version(
            config.model_name,
            onnx_path,
            run_id=ctx.run_id,
            signature=signature(
                [(INPUT_NAME, "float32", (-1, prepared.n_features))],
                [(output_tensor(config), "float32", (-1, n_outputs))],
                # TabularMLP replaces NaN with the training mean inside the graph: this model imputes
                # missing values itself, so serving must feed them as NaN, not 0.
                imputes_missing=True,
                # The label value of each output column (aether.classes too): the monitor maps its
                # argmax through them, since labels need not be 0..k-1.
                classes=prepared.classes,
            ),
            dataset_hash=data.dataset_hash,
            dataset_query=data.query,
            feature_refs=list(data.feature_refs),
            hyperparameters=config.as_hyperparameters(),
            metrics=dict(metrics),
            git_commit=git_commit(),
            description=(
                f"aether built-in trainer: {config.task} MLP, job {ctx.job_id}; "
                f"drift reference profile sha256:{profile_sha} (run artifact {RUN_ARTIFACT_NAME})"
            ),
        )
    return Registered(version, profile_sha)


def _registered_by_run(registry: ModelRegistryClient, model_name: str, run_id: str) -> pb.ModelVersion | None:
    if not run_id:
        return None
    try:
        versions = registry.list_versions(model_name)
    except NotFound:  # no such model yet
        return None
    return next((v for v in reversed(versions) if v.run_id == run_id), None)
