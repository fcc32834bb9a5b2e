"""The training loop: deterministic on CPU, checkpointed, resumable to the same bits.

Determinism: every RNG is seeded from ``seed`` before the model is built, torch runs deterministic
algorithms with a fixed thread count, and the batch order comes from a dedicated ``torch.Generator``
(one ``randperm`` per epoch). A checkpoint at the end of an epoch holds the model, Adam's moments, the
LR scheduler, the batch-order generator and every global RNG (dropout draws from torch's), so an attempt
that resumes from it replays the remaining epochs exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from control_plane.training.checkpoint import Checkpoint, TrainingState
from control_plane.training.trainer.config import TrainerConfig
from control_plane.training.trainer.data import PreparedData
from control_plane.training.trainer.model import TabularMLP

BATCH_ORDER = "batch_order"


class TrainingHooks(Protocol):
    """What the loop needs from the SDK (:class:`~control_plane.training.context.TrainingContext`)."""

    def log_metrics(
        self, epoch: int, values: Mapping[str, float] | None = None, /, **metrics: float
    ) -> None: ...

    def log_batch_metrics(
        self, step: int, values: Mapping[str, float] | None = None, /, **metrics: float
    ) -> None: ...

    @property
    def log_per_batch(self) -> bool: ...

    def checkpoint(self, state: TrainingState) -> object: ...

    def resume(self) -> Checkpoint | None: ...


@dataclass
class Trainee:
    """Everything the loop mutates, in the shape a checkpoint saves."""

    state: TrainingState
    loss_fn: nn.Module

    @property
    def model(self) -> TabularMLP:
        model = self.state.model
        assert isinstance(model, TabularMLP)
        return model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        assert self.state.optimizer is not None
        return self.state.optimizer

    @property
    def generator(self) -> torch.Generator:
        generator = self.state.generators[BATCH_ORDER]
        assert isinstance(generator, torch.Generator)
        return generator


def make_deterministic(seed: int, threads: int) -> None:
    # What torch.use_deterministic_algorithms(True) does, minus setting TorchInductor's flag: that import
    # pulls in torch._dynamo (~2.5 s per process, every attempt) for a compiler this trainer never uses.
    torch._C._set_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build(config: TrainerConfig, data: PreparedData) -> Trainee:
    """A fresh model, optimizer, scheduler and batch-order generator, all from ``config.seed``."""
    make_deterministic(config.seed, config.threads)
    model = TabularMLP(data.mean, data.std, config.hidden, data.n_outputs, config.dropout)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=config.lr_step_epochs, gamma=config.lr_gamma
    )
    generator = torch.Generator().manual_seed(config.seed)
    loss_fn: nn.Module = nn.CrossEntropyLoss() if data.classes else nn.MSELoss()
    return Trainee(TrainingState(model, optimizer, scheduler, generators={BATCH_ORDER: generator}), loss_fn)


def train_one_epoch(
    trainee: Trainee, x: torch.Tensor, y: torch.Tensor, batch_size: int, hooks: TrainingHooks | None = None
) -> float:
    """One pass over ``x`` in the generator's order; the mean training loss. Advances ``state.step``."""
    model, optimizer, loss_fn = trainee.model, trainee.optimizer, trainee.loss_fn
    model.train()
    order = torch.randperm(x.shape[0], generator=trainee.generator)
    total = torch.zeros((), dtype=torch.float64)
    per_batch = hooks is not None and hooks.log_per_batch
    for start in range(0, x.shape[0], batch_size):
        rows = order[start : start + batch_size]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[rows]), y[rows])
        loss.backward()
        optimizer.step()
        trainee.state.step += 1
        batch_loss = loss.detach()
        total += batch_loss * rows.shape[0]
        if per_batch and hooks is not None:
            hooks.log_batch_metrics(trainee.state.step, loss=float(batch_loss))
    return float(total) / x.shape[0]


@torch.no_grad()
def held_out_loss(trainee: Trainee, x: torch.Tensor, y: torch.Tensor) -> float:
    trainee.model.eval()
    loss = float(trainee.loss_fn(trainee.model(x), y))
    trainee.model.train()
    return loss


def run_epoch(trainee: Trainee, config: TrainerConfig, data: PreparedData, hooks: TrainingHooks) -> None:
    """Epoch ``state.epoch``: train, step the LR schedule, evaluate every ``eval_every`` epochs, log
    ``train_loss``, ``lr`` (and ``val_loss``), checkpoint every ``checkpoint_interval`` epochs and after
    the last."""
    state = trainee.state
    assert state.scheduler is not None
    epoch = state.epoch
    lr = float(state.scheduler.get_last_lr()[0])
    train_loss = train_one_epoch(trainee, data.x_train, data.y_train, config.batch_size, hooks)
    metrics = {"train_loss": train_loss, "lr": lr}
    state.scheduler.step()
    if config.eval_every > 0 and (epoch + 1) % config.eval_every == 0:
        metrics["val_loss"] = held_out_loss(trainee, data.x_test, data.y_test)
    hooks.log_metrics(epoch, metrics)
    state.epoch = epoch + 1
    if state.epoch % config.checkpoint_interval == 0 or state.epoch == config.epochs:
        hooks.checkpoint(state)


def fit(config: TrainerConfig, data: PreparedData, hooks: TrainingHooks) -> Trainee:
    """Trains to ``config.epochs`` (:func:`run_epoch` each), starting from the newest valid checkpoint
    when there is one."""
    trainee = build(config, data)
    state = trainee.state
    last = hooks.resume()
    if last is not None:
        last.restore(state)
        print(f"resumed from {last.path.name}: epoch {state.epoch}, step {state.step}", flush=True)
    while state.epoch < config.epochs:
        run_epoch(trainee, config, data, hooks)
    trainee.model.eval()
    return trainee
