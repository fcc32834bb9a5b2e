"""Checkpoints: every state restored (RNG streams continue identically), corrupt files skipped with a
warning, keep-last-K pruning, atomic writes that leave nothing behind when they fail."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from control_plane.training.checkpoint import (
    CheckpointManager,
    CorruptCheckpointWarning,
    TrainingState,
    encode,
    load_payload,
)
from control_plane.training.rng import OwnedGenerator


def make_state(seed: int = 0) -> TrainingState:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    generators: dict[str, OwnedGenerator] = {
        "batches": torch.Generator().manual_seed(seed),
        "numpy": np.random.default_rng(seed),
    }
    return TrainingState(model, optimizer, scheduler, epoch=0, step=0, generators=generators)


def train_step(state: TrainingState) -> None:
    assert state.optimizer is not None and state.scheduler is not None
    state.optimizer.zero_grad()
    state.model(torch.randn(8, 3)).pow(2).mean().backward()
    state.optimizer.step()
    state.scheduler.step()
    state.epoch += 1
    state.step += 8


def draws(state: TrainingState) -> tuple[float, ...]:
    batches = state.generators["batches"]
    numpy_generator = state.generators["numpy"]
    assert isinstance(batches, torch.Generator) and isinstance(numpy_generator, np.random.Generator)
    return (
        random.random(),
        float(np.random.rand()),
        float(np.random.randn()),
        float(torch.rand(1)),
        float(torch.rand(1, generator=batches)),
        float(numpy_generator.random()),
    )


def test_restore_brings_back_every_state_and_rng_stream(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    state = make_state()
    train_step(state)
    state.extra = {"best": 0.5, "history": [1, 2]}
    manager.save(state)
    expected_draws = draws(state)
    train_step(state)
    expected_weights = {k: v.clone() for k, v in state.model.state_dict().items()}

    fresh = make_state(seed=99)  # different weights and RNG positions until restored
    checkpoint = manager.resume()
    assert checkpoint is not None
    checkpoint.restore(fresh)
    assert (fresh.epoch, fresh.step, fresh.extra) == (1, 8, {"best": 0.5, "history": [1, 2]})
    assert draws(fresh) == expected_draws
    train_step(fresh)  # the same step from the same state: Adam moments and LR schedule were restored
    for name, tensor in fresh.model.state_dict().items():
        assert torch.equal(tensor, expected_weights[name]), name


def test_resume_without_checkpoints_is_none(tmp_path: Path) -> None:
    assert CheckpointManager(tmp_path / "new").resume() is None


def _flip_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_flip_middle, "sha256 checksum mismatch"),
        (lambda data: data[: len(data) - 100], "header says"),
        (lambda data: b"garbage" + data[7:], "bad header"),
        (lambda data: b"", "bad header"),
        (lambda data: encode(b"not a torch file"), "does not load"),
    ],
)
def test_corrupt_newest_falls_back_to_the_one_before_with_a_warning(
    tmp_path: Path, damage: object, reason: str
) -> None:
    manager = CheckpointManager(tmp_path, keep_last=3)
    state = make_state()
    for _ in range(3):
        train_step(state)
        manager.save(state)
    newest = tmp_path / "checkpoint-00000003.ckpt"
    assert callable(damage)
    newest.write_bytes(damage(newest.read_bytes()))

    with pytest.warns(CorruptCheckpointWarning, match=f"checkpoint-00000003.ckpt: .*{reason}"):
        checkpoint = CheckpointManager(tmp_path).resume()
    assert checkpoint is not None and (checkpoint.sequence, checkpoint.epoch) == (2, 2)
    # Kept for inspection, never tried again, and numbering goes on past it.
    assert (tmp_path / "checkpoint-00000003.ckpt.corrupt").exists()
    assert manager.save(state).name == "checkpoint-00000004.ckpt"


def test_every_checkpoint_corrupt_means_starting_over(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    state = make_state()
    for _ in range(2):
        manager.save(state)
    for path in manager.checkpoints():
        path.write_bytes(_flip_middle(path.read_bytes()))
    with pytest.warns(CorruptCheckpointWarning) as caught:
        assert manager.resume() is None
    assert len(caught) == 2


def test_keeps_only_the_newest_k(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=2)
    state = make_state()
    (tmp_path / "checkpoint-00000000.ckpt.corrupt").write_bytes(b"kept for inspection")
    for _ in range(5):
        train_step(state)
        manager.save(state)
    assert [p.name for p in manager.checkpoints()] == ["checkpoint-00000004.ckpt", "checkpoint-00000005.ckpt"]
    assert [load_payload(p)["epoch"] for p in manager.checkpoints()] == [4, 5]
    assert (tmp_path / "checkpoint-00000000.ckpt.corrupt").exists()  # corrupt files are not pruned


def test_a_failed_write_leaves_no_file_and_partial_writes_are_cleaned(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    state = make_state()
    manager.save(state)
    state.extra = {"unpicklable": lambda: None}
    with pytest.raises(Exception, match="lambda"):
        manager.save(state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-00000001.ckpt"]

    (tmp_path / ".checkpoint-00000002.ckpt.1234.tmp").write_bytes(b"half written by a killed process")
    reopened = CheckpointManager(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-00000001.ckpt"]
    assert reopened.resume() is not None


def test_keep_last_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep_last"):
        CheckpointManager(tmp_path, keep_last=0)
