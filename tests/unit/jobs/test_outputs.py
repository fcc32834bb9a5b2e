"""A job's ``outputs.json`` as the supervisor reads it (``files.read_outputs``): the file is the
job's, so it is read neither through a link nor without a bound."""

from __future__ import annotations

import json
import os
from pathlib import Path

from control_plane.jobs.files import MAX_OUTPUTS_BYTES, JobFiles, read_outputs


def test_outputs_are_read_as_a_dict(tmp_path: Path) -> None:
    files = JobFiles(tmp_path)
    (tmp_path / "outputs.json").write_text(json.dumps({"model": "churn", "version": 3}))
    assert read_outputs(files) == {"model": "churn", "version": 3}
    (tmp_path / "outputs.json").write_text("[1, 2]")
    assert read_outputs(files) == {"value": [1, 2]}
    (tmp_path / "outputs.json").write_text("null")  # JSON, if no dict: not taken for one nested too deep
    assert read_outputs(files) == {"value": None}


def test_outputs_over_the_bound_are_not_read_and_the_log_says_so(tmp_path: Path) -> None:
    # A sparse file of any size costs the job nothing; read whole, it went into the supervisor's memory
    # and the job's row.
    files = JobFiles(tmp_path)
    with open(tmp_path / "outputs.json", "wb") as file:
        file.write(b'{"padding": "')
        file.truncate(64 * MAX_OUTPUTS_BYTES)
    assert read_outputs(files) == {}
    assert f"outputs.json is over {MAX_OUTPUTS_BYTES} bytes: not read" in files.log.read_text()
    exactly = json.dumps({"padding": "x" * (MAX_OUTPUTS_BYTES - 20)})
    assert len(exactly) <= MAX_OUTPUTS_BYTES
    (tmp_path / "outputs.json").write_text(exactly)
    assert read_outputs(files) == json.loads(exactly)


def test_outputs_behind_a_link_are_not_read(tmp_path: Path) -> None:
    files = JobFiles(tmp_path)
    secret = tmp_path / "elsewhere.json"
    secret.write_text('{"secret": 1}')
    os.symlink(secret, tmp_path / "outputs.json")
    assert read_outputs(files) == {}
