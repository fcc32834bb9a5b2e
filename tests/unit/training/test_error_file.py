"""The failed rank's error file is replaced whole, never written in place (torchrun read a half-written one
and died on its JSON: ``control_plane/training/trainer/error_file.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

from control_plane.training.trainer.error_file import ERROR_FILE_VARIABLE, WholeErrorFileHandler


def _recorded(handler: ErrorHandler) -> None:
    try:
        raise RuntimeError("rank 0 lost its peer")
    except RuntimeError as exc:
        handler.record_exception(exc)


def test_the_error_file_is_replaced_whole_so_a_reader_never_sees_it_half_written(tmp_path: Path) -> None:
    path = tmp_path / "error.json"
    path.write_text("{}")
    # A reader that opened the file before the write: an in-place write (open "w") truncates the file it
    # reads, which is what torchrun saw; a rename leaves it the old file whole.
    with path.open() as early_reader:
        _recorded(WholeErrorFileHandler({ERROR_FILE_VARIABLE: str(path)}))
        assert early_reader.read() == "{}"
    written = json.loads(path.read_text())
    assert written["message"]["message"] == "RuntimeError: rank 0 lost its peer"
    assert "rank 0 lost its peer" in written["message"]["extraInfo"]["py_callstack"]
    assert [p.name for p in tmp_path.iterdir()] == ["error.json"]  # no temporary file left


_TORCHS_OWN = """
from torch.distributed.elastic.multiprocessing.errors import ErrorHandler
try:
    raise RuntimeError("rank 0 lost its peer")
except RuntimeError as exc:
    ErrorHandler().record_exception(exc)
"""


def _comparable(record: dict[str, Any]) -> dict[str, Any]:
    info = record["message"]["extraInfo"]
    info["timestamp"] = "0"
    info["py_callstack"] = info["py_callstack"].splitlines()[-1]  # the exception's line
    return record


def test_it_writes_what_torchs_own_handler_writes(tmp_path: Path) -> None:
    theirs, ours = tmp_path / "theirs.json", tmp_path / "ours.json"
    # torch's handler reads the path from its process's environment: run it in a process of its own.
    subprocess.run(
        [sys.executable, "-c", _TORCHS_OWN], env={**os.environ, ERROR_FILE_VARIABLE: str(theirs)}, check=True
    )
    _recorded(WholeErrorFileHandler({ERROR_FILE_VARIABLE: str(ours)}))
    assert _comparable(json.loads(ours.read_text())) == _comparable(json.loads(theirs.read_text()))


def test_without_an_error_file_nothing_is_written(tmp_path: Path) -> None:
    _recorded(WholeErrorFileHandler({}))
    assert list(tmp_path.iterdir()) == []


# A rank of a one-process world (a real gloo group) whose job fails, run as the trainer's entry point runs
# it (``record`` around ``train_in_group``): it prints, for each error file written, whether the process
# group was still up then.
_FAILING_RANK = """
import json, sys
from functools import partial
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record
from control_plane.training.trainer.__main__ import train_in_group
from control_plane.training.trainer.error_file import WholeErrorFileHandler

class GroupWatchingHandler(WholeErrorFileHandler):
    writes = []

    def _write(self, path, e):
        self.writes.append(dist.is_initialized())
        super()._write(path, e)

def fail(world):
    raise RuntimeError("rank 0 failed before resume")

handler = GroupWatchingHandler()
try:
    record(partial(train_in_group, fail, handler), error_handler=handler)()
except RuntimeError:
    print(json.dumps(handler.writes))
"""


def test_a_failed_rank_s_error_file_is_written_once_while_its_process_group_is_still_up(
    tmp_path: Path,
) -> None:
    """torchrun names the rank with the earliest error file: written after the group was torn down, the
    failed rank's could be stamped after those of the ranks that failed on its closed connection."""
    error_file = tmp_path / "error.json"
    torchrun_variables = {
        "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "0",
        "CUDA_VISIBLE_DEVICES": "", ERROR_FILE_VARIABLE: str(error_file),
    }  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-c", _FAILING_RANK],
        env={**os.environ, **torchrun_variables},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(run.stdout) == [True], run.stderr  # once, inside the group (``record`` adds none)
    written = json.loads(error_file.read_text())
    assert written["message"]["message"] == "RuntimeError: rank 0 failed before resume"
