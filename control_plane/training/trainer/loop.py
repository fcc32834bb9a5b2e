"""The training loop: deterministic (on the CPU, or on the GPU a job was given: deterministic algorithms with
a fixed cuBLAS workspace), checkpointed, resumable to the same bits.

Determinism: every RNG is seeded from ``seed`` before the model is built, torch runs deterministic
algorithms with a fixed thread count, and the batch order comes from a dedicated ``torch.Generator``
(one ``randperm`` per epoch). A checkpoint at the end of an epoch holds the model, Adam's moments, the
LR scheduler, the batch-order generator and every global RNG (dropout draws from torch's), so an attempt
that resumes from it replays the remaining epochs exactly as the uninterrupted run would have.

Data-parallel (a :class:`~control_plane.training.distributed.World` of several ranks under torchrun): the
model is wrapped in ``DistributedDataParallel``, which averages the gradients over the ranks. Every rank
draws the same epoch permutation from the same generator and trains on its shard of it
(:meth:`World.shard`, what ``DistributedSampler`` does; the generator advancing each epoch plays
``set_epoch``). ``batch_size`` stays the *global* batch: each rank takes ``ceil(batch_size / ranks)``
rows per step, so a hyperparameter means the same whatever the GPU count and, with a batch that divides,
a run steps on the same batches as on one process. All ranks are seeded alike (identical initial replicas, and
dropout draws the same on every rank), so the global RNG states rank 0 checkpoints are every rank's: all
ranks restore the same checkpoint and replay the remaining epochs as an uninterrupted run would have.
Logged losses are means over all ranks' rows (an all-reduce), not rank 0's shard.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from control_plane.training.checkpoint import Checkpoint, TrainingState
from control_plane.training.distributed import SINGLE, World
from control_plane.training.trainer.config import TrainerConfig
from control_plane.training.trainer.data import PreparedData
from control_plane.training.trainer.model import TabularMLP

BATCH_ORDER = "batch_order"
TENSORS = ("x_train", "y_train", "x_test", "y_test")


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
    world: World = SINGLE
    #: What training steps through: the model, or its ``DistributedDataParallel`` wrapper (whose backward
    #: averages the gradients over the ranks). The state (and so every checkpoint) holds the bare model.
    replica: nn.Module | None = None

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


def build(config: TrainerConfig, data: PreparedData, world: World = SINGLE) -> Trainee:
    """A fresh model (on ``world.device``), optimizer, scheduler and batch-order generator, all from
    ``config.seed``."""
    make_deterministic(config.seed, config.threads)
    model = TabularMLP(data.mean, data.std, config.hidden, data.n_outputs, config.dropout).to(world.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=config.lr_step_epochs, gamma=config.lr_gamma
    )
    generator = torch.Generator().manual_seed(config.seed)
    loss_fn: nn.Module = nn.CrossEntropyLoss() if data.classes else nn.MSELoss()
    state = TrainingState(model, optimizer, scheduler, generators={BATCH_ORDER: generator})
    return Trainee(state, loss_fn, world)


def train_one_epoch(
    trainee: Trainee, x: torch.Tensor, y: torch.Tensor, batch_size: int, hooks: TrainingHooks | None = None
) -> float:
    """One pass over ``x`` in the generator's order (this rank's shard of it, ``batch_size`` being the
    global batch); the mean training loss over every rank's rows. Advances ``state.step``."""
    model, optimizer, loss_fn, world = trainee.model, trainee.optimizer, trainee.loss_fn, trainee.world
    replica = trainee.replica if trainee.replica is not None else model
    model.train()
    order = world.shard(torch.randperm(x.shape[0], generator=trainee.generator)).to(x.device)
    per_rank = world.per_rank_batch(batch_size)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    per_batch = hooks is not None and hooks.log_per_batch
    for start in range(0, order.shape[0], per_rank):
        rows = order[start : start + per_rank]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(replica(x[rows]), y[rows])
        loss.backward()
        optimizer.step()
        trainee.state.step += 1
        batch_loss = loss.detach()
        total += batch_loss * rows.shape[0]
        if per_batch and hooks is not None:
            # Every rank takes part in the all-reduce; only rank 0's context logs the point.
            hooks.log_batch_metrics(trainee.state.step, loss=float(world.mean(batch_loss)))
    rows_seen = order.shape[0] * world.size  # the same on every rank (the shards are padded alike)
    return float(world.sum(total)) / rows_seen


@torch.no_grad()
def held_out_loss(trainee: Trainee, x: torch.Tensor, y: torch.Tensor) -> float:
    trainee.model.eval()
    # The whole held-out set on every rank (the replicas are identical, so is the loss): no all-reduce.
    loss = float(trainee.loss_fn(trainee.model(x), y))
    trainee.model.train()
    return loss


def evaluates_after(epoch: int, config: TrainerConfig) -> bool:
    """Whether epoch ``epoch`` (0-based) ends with the held-out loss: after the last epoch always, and
    every ``eval_every`` epochs before it (0: only after the last). The trained model thus always has a
    ``val_loss``, which gates and comparisons read: an ``eval_every`` past ``epochs`` (or 0, before) left
    it with none."""
    if epoch + 1 == config.epochs:
        return True
    return config.eval_every > 0 and (epoch + 1) % config.eval_every == 0


def run_epoch(trainee: Trainee, config: TrainerConfig, data: PreparedData, hooks: TrainingHooks) -> None:
    """Epoch ``state.epoch``: train, step the LR schedule, evaluate (:func:`evaluates_after`), log
    ``train_loss``, ``lr`` (and ``val_loss``), checkpoint every ``checkpoint_interval`` epochs and after
    the last."""
    state = trainee.state
    assert state.scheduler is not None
    epoch = state.epoch
    lr = float(state.scheduler.get_last_lr()[0])
    train_loss = train_one_epoch(trainee, data.x_train, data.y_train, config.batch_size, hooks)
    metrics = {"train_loss": train_loss, "lr": lr}
    state.scheduler.step()
    if evaluates_after(epoch, config):
        metrics["val_loss"] = held_out_loss(trainee, data.x_test, data.y_test)
    hooks.log_metrics(epoch, metrics)
    state.epoch = epoch + 1
    if state.epoch % config.checkpoint_interval == 0 or state.epoch == config.epochs:
        hooks.checkpoint(state)


def fit(config: TrainerConfig, data: PreparedData, hooks: TrainingHooks, world: World = SINGLE) -> Trainee:
    """Trains to ``config.epochs`` (:func:`run_epoch` each), starting from the newest valid checkpoint
    when there is one; data-parallel over ``world``'s ranks when it has several."""
    trainee = build(config, data, world)
    state = trainee.state
    last = hooks.resume()
    if last is not None:
        last.restore(state)  # before the DDP wrapper, which broadcasts rank 0's parameters once made
        print(f"resumed from {last.path.name}: epoch {state.epoch}, step {state.step}", flush=True)
    if world.distributed:
        device_ids = [world.device] if world.device.type == "cuda" else None
        # The buffers (normalisation statistics of the whole training set) never change: no broadcast.
        trainee.replica = DistributedDataParallel(
            trainee.model, device_ids=device_ids, broadcast_buffers=False
        )
        per_rank = world.per_rank_batch(config.batch_size)
        shard_rows = len(world.shard(torch.arange(data.x_train.shape[0])))
        print(
            f"rank {world.rank}/{world.size} on {world.device}: {shard_rows} of"
            f" {data.x_train.shape[0]} training rows per epoch, {per_rank} per step"
            f" (effective batch {per_rank * world.size})",
            flush=True,
        )
    if world.device.type != "cpu":
        data = replace(data, **{name: getattr(data, name).to(world.device) for name in TENSORS})
    while state.epoch < config.epochs:
        run_epoch(trainee, config, data, hooks)
    trainee.model.eval()
    if world.distributed:
        digest = world.check_replicas(trainee.model)
        print(f"rank {world.rank}/{world.size}: trained parameters sha256 {digest}", flush=True)
    return trainee
