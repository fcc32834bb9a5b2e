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
