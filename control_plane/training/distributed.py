"""Data-parallel training under torchrun: the process group, this process's place in it, and the few
collectives the built-in trainer needs.

The executor starts a job with more than one GPU through ``torch.distributed.run`` (one process per GPU,
with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set).
:func:`process_group` initialises ``torch.distributed`` from them: NCCL with each rank on
``cuda:LOCAL_RANK`` when CUDA is available (the job's ``CUDA_VISIBLE_DEVICES`` already holds only the GPUs
the pool gave it), gloo on the CPU otherwise. A process started without ``WORLD_SIZE`` (a job with 0 or 1
GPU) initialises nothing and is a world of one, on which every collective here is the identity: on
``cuda:0`` when the job was given a GPU (:func:`single_device`), else :data:`SINGLE` on the CPU.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from clients.errors import FailedPrecondition, Internal

WORLD_SIZE = "WORLD_SIZE"
CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"


@dataclass(frozen=True)
class World:
    """This process's rank among ``size`` processes training one model, and the device it trains on."""

    rank: int = 0
    size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    #: Whether a process group is initialised (the collectives below then talk to the other ranks).
    distributed: bool = False

    def per_rank_batch(self, batch_size: int) -> int:
        """Each rank's share of the global batch ``batch_size`` (rounded up when it does not divide: the
        effective batch is then this times ``size``)."""
        return math.ceil(batch_size / self.size)

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's rows of one epoch's permutation ``order`` (the same on every rank): what
        ``DistributedSampler`` takes. ``order`` is padded by repeating its head to a multiple of ``size``
        so every rank gets as many rows — and as many batches — as the others (a rank with one batch
        less would leave the others waiting in the gradient all-reduce); then rank r takes every
        ``size``-th row from position r. Strided, not in blocks: when the batch divides by ``size``, rank
        r's k-th batch holds rows of the single-process run's k-th batch, so the ranks together step on
        the batches it steps on."""
        if self.size == 1:
            return order
        padding = -len(order) % self.size
        if padding:
            order = torch.cat([order, order.repeat(math.ceil(padding / len(order)))[:padding]])
        return order[self.rank :: self.size]

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the ranks, in place (on this rank's device)."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean of ``tensor`` over the ranks (a copy)."""
        return self.sum(tensor.detach().clone()) / self.size if self.distributed else tensor

    def check_replicas(self, model: nn.Module) -> str:
        """The sha256 of ``model``'s parameters and buffers, checked equal on every rank: DDP keeps the
        replicas identical, and a rank that drifted would mean the model rank 0 exports is not the one
        the others trained. Raises :class:`Internal` naming the ranks when they differ."""
        digest = hashlib.sha256()
        for name, tensor in model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        mine = digest.hexdigest()
        if not self.distributed:
            return mine
        everyone: list[str | None] = [None] * self.size
        dist.all_gather_object(everyone, mine)
        if any(other != mine for other in everyone):
            raise Internal(f"the ranks' model replicas differ after training (sha256 by rank: {everyone})")
        return mine


SINGLE = World()


def single_device(cuda_visible_devices: str | None, cuda_available: bool) -> torch.device:
    """The device of a process outside torchrun: ``cuda:0`` (the one GPU the job's
    ``CUDA_VISIBLE_DEVICES`` leaves it) when the scheduler gave the job a GPU and CUDA works, else the
    CPU. A job with ``gpus=1`` is started without torchrun; it was always on the CPU, holding a GPU it
    never used. ``CUDA_VISIBLE_DEVICES`` unset (a process the executor did not start) or empty (a CPU
    job) keeps the CPU."""
    if cuda_available and cuda_visible_devices is not None and cuda_visible_devices.strip():
        return torch.device("cuda", 0)
    return torch.device("cpu")


def _deterministic_cublas() -> None:
    # cuBLAS is deterministic only with a fixed workspace; the trainer runs torch's deterministic
    # algorithms, which refuse a CUDA matmul without it. Read when the first cuBLAS handle is made.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@contextmanager
def process_group(environ: Mapping[str, str] | None = None) -> Iterator[World]:
    """The world of this process: under torchrun (``WORLD_SIZE`` set) a process group initialised from
    its variables and destroyed on the way out (also after a failure); else a world of one on
    :func:`single_device`."""
    env = os.environ if environ is None else environ
    if WORLD_SIZE not in env:
        device = single_device(env.get(CUDA_VISIBLE_DEVICES), torch.cuda.is_available())
        if device.type == "cpu":
            yield SINGLE
            return
        _deterministic_cublas()
        torch.cuda.set_device(device)
        yield World(device=device)
        return
    rank, size, local_rank = int(env["RANK"]), int(env[WORLD_SIZE]), int(env.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        visible = torch.cuda.device_count()
        if local_rank >= visible:
            raise FailedPrecondition(
                f"rank {rank}: LOCAL_RANK {local_rank} has no GPU, {visible} visible"
                f" (CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', '')!r})"
            )
        _deterministic_cublas()
        device, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(device)
    else:
        device, backend = torch.device("cpu"), "gloo"
    dist.init_process_group(backend, rank=rank, world_size=size)
    try:
        yield World(rank, size, device, distributed=True)
        # The ranks leave the group together: rank 1 tore its gloo group down while rank 0 still held it
        # (exporting and registering alone) and aborted at exit now and then ("terminate called without an
        # active exception"), failing the attempt. Not after an error: torchrun stops the other ranks then.
        dist.barrier()
    finally:
        dist.destroy_process_group()
