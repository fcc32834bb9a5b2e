"""How data-parallel ranks split an epoch (what ``DistributedSampler`` does, checked against it), and that
a process outside torchrun is a world of one on which nothing is distributed. The ranks themselves run in
tests/integration/training/test_data_parallel.py."""

from __future__ import annotations

import torch
import torch.distributed as dist
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import TensorDataset
from torch.utils.data.distributed import DistributedSampler

from control_plane.training.distributed import SINGLE, World, process_group, single_device


def shards(order: torch.Tensor, size: int) -> list[list[int]]:
    return [World(rank, size).shard(order).tolist() for rank in range(size)]


@given(n=st.integers(1, 200), size=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_each_rank_gets_what_distributed_sampler_gives_it(n: int, size: int, seed: int) -> None:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    split = shards(order, size)
    for rank, rows in enumerate(split):
        rows_of = TensorDataset(torch.arange(n))  # the sampler only asks its length
        sampler: DistributedSampler[int] = DistributedSampler(
            rows_of, num_replicas=size, rank=rank, shuffle=False
        )
        assert rows == [int(order[i]) for i in sampler]
    # As many rows on every rank (else a rank would wait in an all-reduce the others never start), every
    # row on some rank, and a row on two ranks only as the padding to a multiple of the ranks.
    assert {len(rows) for rows in split} == {-(-n // size)}
    seen = [row for rows in split for row in rows]
    assert set(seen) == set(range(n)) and len(seen) - len(set(seen)) == -n % size


@given(
    size=st.integers(1, 4), per_rank=st.integers(1, 16), batches=st.integers(1, 6), seed=st.integers(0, 99)
)
def test_the_ranks_step_together_on_the_single_process_batches(
    size: int, per_rank: int, batches: int, seed: int
) -> None:
    # With a global batch that divides by the ranks (and rows that do), rank r's k-th batch is its share
    # of the single-process run's k-th batch: averaging their gradients is that batch's gradient.
    batch = per_rank * size
    order = torch.randperm(batch * batches, generator=torch.Generator().manual_seed(seed))
    assert World(0, size).per_rank_batch(batch) == per_rank
    split = shards(order, size)
    for k in range(batches):
        together = sorted(row for rows in split for row in rows[k * per_rank : (k + 1) * per_rank])
        assert together == sorted(order[k * batch : (k + 1) * batch].tolist())


def test_a_batch_that_does_not_divide_is_rounded_up_per_rank() -> None:
    assert [World(0, size).per_rank_batch(64) for size in (1, 2, 3, 64, 100)] == [64, 32, 22, 1, 1]


def test_outside_torchrun_the_world_is_one_process_and_nothing_is_initialised() -> None:
    with process_group({"RANK": "0", "LOCAL_RANK": "0"}) as world:  # RANK alone: no WORLD_SIZE
        assert world is SINGLE and not world.distributed and not dist.is_initialized()
        assert (world.rank, world.size, world.device) == (0, 1, torch.device("cpu"))
        order = torch.arange(5)
        assert world.shard(order) is order
        total = torch.tensor(3.0)
        assert world.sum(total) is total and world.mean(total) is total
        model, copy = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
        copy.load_state_dict(model.state_dict())
        assert world.check_replicas(model) == world.check_replicas(copy)  # a digest of the weights
        with torch.no_grad():
            copy.bias.add_(1)
        assert world.check_replicas(model) != world.check_replicas(copy)


def test_a_job_given_one_gpu_trains_on_it_and_a_cpu_job_on_the_cpu() -> None:
    """A job with gpus=1 is started without torchrun; its world was always on the CPU, the GPU the
    scheduler gave it (its CUDA_VISIBLE_DEVICES) unused."""
    assert single_device("3", cuda_available=True) == torch.device("cuda", 0)
    assert single_device("GPU-0a1b", cuda_available=True) == torch.device("cuda", 0)
    assert single_device("", cuda_available=True) == torch.device("cpu")  # a CPU job
    assert single_device(None, cuda_available=True) == torch.device("cpu")  # not started by the executor
    assert single_device("3", cuda_available=False) == torch.device("cpu")  # a CPU-only host or torch


def test_outside_torchrun_a_one_gpu_job_s_world_is_on_its_gpu_where_cuda_works() -> None:
    # On this host: the CPU when torch has no CUDA (CI), cuda:0 on a GPU host (the device machine).
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    with process_group({"CUDA_VISIBLE_DEVICES": "0", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}) as world:
        assert (world.rank, world.size, world.device, world.distributed) == (0, 1, expected, False)
        assert not dist.is_initialized()
