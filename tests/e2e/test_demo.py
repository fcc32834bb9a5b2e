"""The README's main command, end to end: `aetherctl demo` starts its own stack and checks every value."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


def test_demo_runs_the_scenario_and_reads_back_every_value(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "control_plane.cli.main", "demo", "--size", "small", "--home", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ, AETHER_HOME=str(tmp_path)),
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    out = completed.stdout
    summary = dict(
        re.findall(r"^(values checked|mismatches|second apply changes)\s+(\d+)$", out, re.MULTILINE)
    )
    assert summary == {"values checked": str(200 * 6), "mismatches": "0", "second apply changes": "0"}
    assert "stopped" in out
    # The stack is down again: no pid files left behind.
    assert not list((tmp_path / "dev").glob("*.pid"))
