"""A quick (smoke-size) run never replaces the committed figures, and the report marks one that is
rendered as not of record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks import _common, render_results
from benchmarks.render_tables import _meta


def test_a_quick_run_is_not_written_over_the_committed_results() -> None:
    if os.environ.get(_common.RESULTS_DIR_VARIABLE):
        return  # this environment chose its own folder for every run: see the next test
    quick = _common.results_dir({"quick": True})
    assert quick == _common.RESULTS_DIR / "quick"
    assert _common.results_dir({"command": "python benchmarks/serving.py --quick"}) == quick
    assert (
        _common.results_dir({"quick": False, "command": "python benchmarks/serving.py"})
        == _common.RESULTS_DIR
    )


def test_the_results_folder_can_be_chosen(tmp_path: Path) -> None:
    root = Path(render_results.__file__).resolve().parents[1]
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from benchmarks._common import write_results; print(write_results('probe', {}))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
        env={**os.environ, _common.RESULTS_DIR_VARIABLE: str(tmp_path)},
    )
    assert Path(done.stdout.strip()) == tmp_path / "probe.json"
    assert json.loads((tmp_path / "probe.json").read_text())["benchmark"] == "probe"


def test_a_quick_result_is_marked_in_the_report() -> None:
    d = json.loads((render_results.RESULTS / "tracking.json").read_text())
    assert "QUICK RUN" not in _meta(d)
    d["quick"] = True
    assert _meta(d).startswith("**QUICK RUN (smoke size)")
    d["quick"], d["command"] = False, "python benchmarks/tracking.py --quick --skip-mlflow"
    assert "QUICK RUN" in _meta(d)
