"""The trainer's loop in process: same seed, same bits — also across a stop and a resume from the
checkpoint; a different seed changes the weights (so the equality is not vacuous)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from control_plane.training.checkpoint import Checkpoint, CheckpointManager, TrainingState, load_payload
from control_plane.training.distributed import process_group
from control_plane.training.trainer.config import TrainerConfig
from control_plane.training.trainer.data import PreparedData
from control_plane.training.trainer.export import check_onnx, export_onnx
from control_plane.training.trainer.loop import fit
from control_plane.training.trainer.model import ServingModel

CONFIG = TrainerConfig(
    task="classification", label="y", hidden=(8,), dropout=0.2, lr=0.05, lr_step_epochs=2, lr_gamma=0.5,
    epochs=6, batch_size=16, seed=7,
)  # fmt: skip


class LocalHooks:
    """The SDK's hooks with metrics kept in memory and real checkpoints in a folder."""

    def __init__(self, folder: Path, *, log_per_batch: bool = False) -> None:
        self.manager = CheckpointManager(folder, keep_last=2)
        self.epochs: dict[int, dict[str, float]] = {}
        self.batches: list[tuple[int, dict[str, float]]] = []
        self._log_per_batch = log_per_batch

    @property
    def log_per_batch(self) -> bool:
        return self._log_per_batch

    def log_metrics(self, epoch: int, values: Mapping[str, float] | None = None, /, **metrics: float) -> None:
        self.epochs[epoch] = {**(values or {}), **metrics}

    def log_batch_metrics(
        self, step: int, values: Mapping[str, float] | None = None, /, **metrics: float
    ) -> None:
        self.batches.append((step, {**(values or {}), **metrics}))

    def checkpoint(self, state: TrainingState) -> Path:
        return self.manager.save(state)

    def resume(self) -> Checkpoint | None:
        return self.manager.resume()


def data() -> PreparedData:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3)).astype(np.float32)
    x[::7, 1] = np.nan
    y = (np.nan_to_num(x[:, 0]) > 0).astype(np.int64)
    return PreparedData(
        x_train=torch.from_numpy(x[:100]),
        y_train=torch.from_numpy(y[:100]),
        x_test=torch.from_numpy(x[100:]),
        y_test=torch.from_numpy(y[100:]),
        mean=np.zeros(3, np.float32),
        std=np.ones(3, np.float32),
        classes=("no", "yes"),
        feature_names=("v@1:a", "v@1:b", "v@1:c"),
    )


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_stop_and_resume_ends_bitwise_equal_to_a_straight_run(tmp_path: Path) -> None:
    straight_hooks = LocalHooks(tmp_path / "straight")
    straight = weights(fit(CONFIG, data(), straight_hooks).model)
    assert torch.are_deterministic_algorithms_enabled()

    interrupted = LocalHooks(tmp_path / "interrupted")
    fit(replace(CONFIG, epochs=3), data(), interrupted)  # stops after epoch 3, as a crash would
    resumed_hooks = LocalHooks(tmp_path / "interrupted")
    resumed = weights(fit(CONFIG, data(), resumed_hooks).model)
    assert sorted(resumed_hooks.epochs) == [3, 4, 5]  # only the remaining epochs ran
    for name, tensor in straight.items():
        assert torch.equal(tensor, resumed[name]), name
    assert resumed_hooks.epochs[5] == straight_hooks.epochs[5]

    other_seed = weights(fit(replace(CONFIG, seed=8), data(), LocalHooks(tmp_path / "other")).model)
    assert not torch.equal(other_seed["body.0.weight"], straight["body.0.weight"])


def test_metrics_per_epoch_checkpoints_per_interval_and_batches_on_request(tmp_path: Path) -> None:
    hooks = LocalHooks(tmp_path, log_per_batch=True)
    fit(replace(CONFIG, checkpoint_interval=4, eval_every=2), data(), hooks)
    assert [load_payload(p)["epoch"] for p in hooks.manager.checkpoints()] == [4, 6]  # every 4th and the last
    assert set(hooks.epochs[0]) == {"train_loss", "lr"} and set(hooks.epochs[1]) == {
        "train_loss",
        "lr",
        "val_loss",
    }
    assert [hooks.epochs[e]["lr"] for e in range(6)] == [0.05, 0.05, 0.025, 0.025, 0.0125, 0.0125]
    assert [step for step, _ in hooks.batches] == list(range(1, 6 * 7 + 1))  # 100 rows / 16 = 7 batches
    assert hooks.epochs[5]["train_loss"] < hooks.epochs[0]["train_loss"]


def test_eval_every_zero_evaluates_after_the_last_epoch_only(tmp_path: Path) -> None:
    # Documented as "held-out loss only at the end": it used to be never.
    hooks = LocalHooks(tmp_path)
    fit(replace(CONFIG, eval_every=0, epochs=3), data(), hooks)
    assert [sorted(hooks.epochs[e]) for e in range(3)] == [
        ["lr", "train_loss"],
        ["lr", "train_loss"],
        ["lr", "train_loss", "val_loss"],
    ]
    # A retry that resumes from the checkpoint before the last epoch still ends with it.
    resumed = LocalHooks(tmp_path / "resumed")
    fit(replace(CONFIG, eval_every=1, epochs=2), data(), resumed)  # stands for an attempt killed after 2
    fit(replace(CONFIG, eval_every=0, epochs=3), data(), resumed)
    assert "val_loss" in resumed.epochs[2]


@pytest.mark.parametrize(("eval_every", "evaluated"), [(5, [2]), (2, [1, 2])])
def test_the_last_epoch_is_evaluated_whatever_eval_every_is(
    tmp_path: Path, eval_every: int, evaluated: list[int]
) -> None:
    # eval_every past the epochs (or not dividing them) left the trained model without a val_loss, the
    # metric gates and comparisons downstream read.
    hooks = LocalHooks(tmp_path)
    fit(replace(CONFIG, eval_every=eval_every, epochs=3), data(), hooks)
    assert [epoch for epoch in range(3) if "val_loss" in hooks.epochs[epoch]] == evaluated


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the device machine)")
def test_a_one_gpu_job_trains_resumes_and_exports_on_cuda(tmp_path: Path) -> None:
    """What a gpus=1 job does (process_group's world on cuda:0): trains on the GPU, resumes from a
    checkpoint to the same bits (loaded with map_location="cpu", copied onto the GPU's parameters and
    Adam's moments, the CUDA generator restored), and exports from the model moved to the CPU."""
    with process_group({"CUDA_VISIBLE_DEVICES": "0"}) as world:
        assert world.device == torch.device("cuda", 0) and not world.distributed
        straight_hooks = LocalHooks(tmp_path / "straight")
        trainee = fit(CONFIG, data(), straight_hooks, world)
        assert {p.device for p in trainee.model.parameters()} == {world.device}
        straight = weights(trainee.model)
        fit(replace(CONFIG, epochs=3), data(), LocalHooks(tmp_path / "interrupted"), world)
        resumed_hooks = LocalHooks(tmp_path / "interrupted")
        resumed = fit(CONFIG, data(), resumed_hooks, world)
    assert sorted(resumed_hooks.epochs) == [3, 4, 5]
    for name, tensor in straight.items():
        assert torch.equal(tensor, weights(resumed.model)[name]), name
    assert resumed_hooks.epochs[5] == straight_hooks.epochs[5]
    serving = ServingModel(resumed.model.cpu(), classification=True)  # as run_job does
    path = export_onnx(serving, 3, tmp_path / "model.onnx", "probabilities", {})
    assert check_onnx(path, serving, data().x_test, 1e-4) <= 1e-4
