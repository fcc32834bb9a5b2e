"""``python -m control_plane.training.trainer``: run the built-in trainer as the current job.

Exit code 0 when the model was trained (and registered); any error exits non-zero with its traceback in
the job's log, and the executor restarts the job from its last checkpoint while retries remain.

Under torchrun (a job with more than one GPU) every rank runs this, data-parallel
(:mod:`control_plane.training.distributed`). A rank that fails ends the attempt: torchrun stops the other
ranks and exits non-zero, and ``record`` hands it the failed rank's exception, which its summary in the
job's log names as the root cause (written whole, ``error_file.py``: torchrun read a half-written one;
and written before the process group is torn down, so that the ranks that fail on the lost connection
after it are not named instead).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from functools import partial
from typing import NoReturn

from torch.distributed.elastic.multiprocessing.errors import record

from control_plane.training.context import TrainingContext
from control_plane.training.distributed import World, process_group
from control_plane.training.trainer.error_file import WholeErrorFileHandler
from control_plane.training.trainer.job import run_job


def train_in_group(job: Callable[[World], None], errors: WholeErrorFileHandler) -> int:
    """Runs ``job`` in this process's world; a failure's error file is written while the process group is
    still up (``errors.recorded_here``, see ``error_file.py``)."""
    with process_group() as world, errors.recorded_here():
        job(world)
    return 0


def _built_in(world: World) -> None:
    with TrainingContext.from_env() as ctx:
        run_job(ctx, world)


_ERRORS = WholeErrorFileHandler()
main = record(partial(train_in_group, _built_in, _ERRORS), error_handler=_ERRORS)


def _leave(code: int) -> NoReturn:
    """Exits with ``code``. A rank of a data-parallel run that succeeded leaves with ``os._exit`` once its
    output is flushed: everything it does (checkpoints, registration, tracking) is done and closed by then,
    and the interpreter's normal exit ran gloo's C++ destructors, which now and then aborted the process
    ("terminate called without an active exception", exit -6) after a complete run, even with the ranks
    leaving the group together (``process_group``), failing an attempt that had registered its model."""
    if code == 0 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    sys.exit(code)


if __name__ == "__main__":
    _leave(main() or 0)  # ``record`` types it Optional
