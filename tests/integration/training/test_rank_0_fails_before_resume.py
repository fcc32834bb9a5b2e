"""A two-rank job (gpus 2, torchrun, through the Jobs service) whose rank 0 fails before it calls
``resume()``, while rank 1 waits in ``resume`` for the record of the checkpoint rank 0 resumed from.

The SDK cannot tell rank 1 anything here: rank 0 never reached the code that records its resume or its
failure (``resume_record.py``). The job's failure semantics do: torchrun sees rank 0 exit non-zero,
stops rank 1 (SIGTERM) and exits non-zero itself, naming rank 0's error in its summary, and the
supervisor fails the attempt. So the job ends as soon as rank 0 has failed, not after rank 1's
``record_wait_s`` (60 s in the program), with or without a process group (rank 1 then waits in the
barrier of ``resume``, not in the poll for the record, and may fail first itself, on the group closing).
Ranks started by hand, outside torchrun, do wait out ``record_wait_s``: no job runs them so."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.aether.v1 import jobs_pb2 as pb
from clients.sdk.jobs import JobsClient
from control_plane.jobs.pool import DevicePool
from tests.integration.training.conftest import Plane, start_plane
from tests.integration.training.programs.rank_0_fails_before_resume import (
    RANK_0_ERROR,
    RANK_1_RESUMING,
    RECORD_WAIT_S,
)

PROGRAM = "tests.integration.training.programs.rank_0_fails_before_resume"
#: From rank 1's mark to the job's end: starting and stopping processes on a loaded host, but far from
#: the RECORD_WAIT_S that rank 1 would wait for the record.
ENDS_WITHIN_S = RECORD_WAIT_S / 3


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    # Two logical GPU slots no CUDA device matches: the ranks take the gloo path on any host.
    yield from start_plane(tmp_path_factory, DevicePool(("cpu0", "cpu1"), "config"))


@pytest.mark.parametrize("process_group", [True, False], ids=["process-group", "no-process-group"])
def test_the_job_ends_as_soon_as_rank_0_fails_naming_its_error(plane: Plane, process_group: bool) -> None:
    spec = {
        "name": f"rank-0-fails-{'pg' if process_group else 'nopg'}",
        "entrypoint": {"module": PROGRAM},
        "hyperparameters": {"process_group": process_group},
        "gpus": 2,
        "max_retries": 0,
    }
    deadline = time.monotonic() + 120
    with JobsClient(plane.address) as jobs:
        job = jobs.submit(spec)
        while not (done := jobs.get(job.job_id)).finished_at_us:
            assert time.monotonic() < deadline, b"".join(jobs.logs(job.job_id)).decode()
            time.sleep(0.05)
        log = b"".join(jobs.logs(job.job_id)).decode()
    assert done.state == pb.JOB_STATE_FAILED and done.attempt == 1, log
    assert done.exit_code != 0, log
    # Rank 1 was waiting in resume() when rank 0 failed, and was stopped for it soon after, not after
    # its record_wait_s (both clocks are this host's wall clock).
    mark = Path(done.checkpoint_dir).parent / RANK_1_RESUMING
    assert mark.exists(), log
    waited_s = done.finished_at_us / 1e6 - mark.stat().st_mtime
    assert 0 <= waited_s < ENDS_WITHIN_S, (waited_s, log)
    # Rank 1 did not fail on its own for a record that never came, nor resume: torchrun stopped it
    # (SIGTERM), or, in a process group, it failed first on rank 0's side of the group closing. Either
    # way torchrun's summary of the attempt names rank 0 and its error.
    assert "did not record which checkpoint" not in log and "resumed from" not in log, log
    stopped = re.search(r"rank\s*:\s*1 \(local_rank: 1\)\n\s*exitcode\s*:\s*-15", log)
    assert stopped or (process_group and "Connection closed by peer" in log), log
    summary = log[log.index(f"{PROGRAM} FAILED") :]
    assert re.search(r"rank\s*:\s*0 \(local_rank: 0\)", summary), log
    assert f"RuntimeError: {RANK_0_ERROR}" in summary, log
