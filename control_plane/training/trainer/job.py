"""The trainer as a job: data → fit (resuming) → held-out evaluation → ONNX (checked) → registration →
``outputs.json``."""

from __future__ import annotations

import json
from typing import Any

import torch

from control_plane.training.context import TrainingContext
from control_plane.training.distributed import SINGLE, World
from control_plane.training.trainer.config import TrainerConfig
from control_plane.training.trainer.data import PreparedData, prepare
from control_plane.training.trainer.evaluate import classification_metrics, regression_metrics
from control_plane.training.trainer.export import check_onnx, export_onnx
from control_plane.training.trainer.loop import fit
from control_plane.training.trainer.model import ServingModel
from control_plane.training.trainer.register import output_tensor, register_model


def evaluate(model: ServingModel, data: PreparedData) -> dict[str, float]:
    with torch.no_grad():
        output = model(data.x_test).numpy()
    if data.classes:
        return classification_metrics(output, data.y_test.numpy())
    return regression_metrics(output, data.y_test.numpy())


def run_job(ctx: TrainingContext, world: World = SINGLE) -> dict[str, Any]:
    """Trains (data-parallel over ``world``'s ranks), evaluates, exports and registers; returns (and
    writes) the job's outputs. Only rank 0 evaluates, exports, registers and writes the outputs (one
    model version per job, one writer of ``model.onnx``); the other ranks return ``{}`` once trained."""
    outputs_path = ctx.launch.outputs_path
    if ctx.attempt > 1 and outputs_path.exists():
        # An earlier attempt registered the model and died before exiting: do not register it twice.
        outputs: dict[str, Any] = json.loads(outputs_path.read_text())
        print(f"attempt {ctx.attempt}: outputs of an earlier attempt found, nothing left to do", flush=True)
        return outputs
    config = TrainerConfig.from_hyperparameters(
        ctx.hyperparameters, job_name=ctx.spec.name, checkpoint_interval=ctx.spec.checkpoint_interval
    )
    data = ctx.dataset()
    prepared = prepare(data, config)
    train_rows, test_rows = prepared.x_train.shape[0], prepared.x_test.shape[0]
    print(
        f"dataset {data.dataset_hash}: {train_rows} training rows, {test_rows} held out,"
        f" {prepared.n_features} features",
        flush=True,
    )
    trainee = fit(config, prepared, ctx, world)
    if not ctx.is_primary:
        # Nothing after training involves another rank, so no barrier: rank 0 goes on alone, and a
        # failure of its export or registration still fails the job (torchrun fails if any rank does).
        return {}
    # Evaluation, the ONNX export and its check run on the CPU, as after a single-process run.
    serving = ServingModel(trainee.model.cpu(), classification=bool(prepared.classes))
    metrics = evaluate(serving, prepared)
    ctx.log_metrics(config.epochs, {f"test_{name}": value for name, value in metrics.items()})
    folder = ctx.checkpoint_dir.parent / "model"
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = export_onnx(
        serving,
        prepared.n_features,
        folder / "model.onnx",
        output_tensor(config),
        {"task": config.task, "features": list(prepared.feature_names), "classes": list(prepared.classes)},
    )
    difference = check_onnx(onnx_path, serving, prepared.x_test, config.onnx_tolerance)
    print(f"held-out metrics {metrics}; ONNX matches torch within {difference:.3g}", flush=True)
    outputs = {"dataset_hash": data.dataset_hash, "metrics": metrics, "onnx_max_abs_diff": difference}
    if config.register:
        registered = register_model(ctx, config, data, prepared, onnx_path, metrics)
        outputs |= {
            "model": registered.version.model_name,
            "version": int(registered.version.version),
            "reference_profile_sha256": registered.reference_profile_sha256,
        }
        print(f"registered {registered.version.model_name} version {registered.version.version}", flush=True)
    ctx.write_outputs(outputs)
    return outputs
