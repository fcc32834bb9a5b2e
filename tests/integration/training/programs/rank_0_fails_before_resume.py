"""A two-rank job whose rank 0 fails before it calls ``resume()``, as one whose model construction
raises: ``python -m tests.integration.training.programs.rank_0_fails_before_resume`` under torchrun.

Rank 1 first records that it is about to resume (``RANK_1_RESUMING`` in the job's folder), then waits in
``resume(record_wait_s=RECORD_WAIT_S)`` for the record rank 0 never writes. Rank 0 waits for that mark
(so that rank 1 is waiting when it fails, whatever order the ranks started in), then raises
``RANK_0_ERROR``. With the hyperparameter ``process_group`` true both ranks run inside
:func:`~control_plane.training.distributed.process_group` (gloo), as the built-in trainer does, and rank 1
waits in the barrier of ``resume``; without it, in the poll for rank 0's record. Either rank exits 0 only
if rank 1's resume returned, which it must not.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import torch
from torch.distributed.elastic.multiprocessing.errors import record

from control_plane.training.context import TrainingContext
from control_plane.training.distributed import process_group
from control_plane.training.trainer.error_file import WholeErrorFileHandler

#: The mark rank 1 leaves in the job's folder right before it resumes.
RANK_1_RESUMING = "rank-1-resuming"
#: How long rank 1 waits for rank 0's record: far longer than the test lets the job run.
RECORD_WAIT_S = 60.0
RANK_0_ERROR = "rank 0 could not build its model (a fault of this test program)"
#: How long rank 0 waits for rank 1's mark before failing with another error.
MARK_WAIT_S = 60.0


def _rank_1_mark(ctx: TrainingContext) -> Path:
    return ctx.checkpoint_dir.parent / RANK_1_RESUMING


def _fail_as_rank_0(ctx: TrainingContext) -> None:
    mark = _rank_1_mark(ctx)
    deadline = time.monotonic() + MARK_WAIT_S
    while not mark.exists():  # a condition polled, not a sleep standing in for one
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank 1 did not reach resume() within {MARK_WAIT_S:g} s ({mark})")
        time.sleep(0.01)
    raise RuntimeError(RANK_0_ERROR)


def _train() -> None:
    with ExitStack() as stack:
        ctx = TrainingContext.from_env()
        if ctx.hyperparameters.flag("process_group", False):
            stack.enter_context(process_group())
        stack.enter_context(ctx)
        if ctx.is_primary:
            _fail_as_rank_0(ctx)
        torch.nn.Linear(4, 1)  # rank 1 built its model
        mark = _rank_1_mark(ctx)
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.touch()
        resumed = ctx.resume(record_wait_s=RECORD_WAIT_S)
        print(f"rank 1 resumed from {resumed} although rank 0 failed", flush=True)


main = record(_train, error_handler=WholeErrorFileHandler())


if __name__ == "__main__":
    main()
