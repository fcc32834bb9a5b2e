"""Running a short Python script that SIGKILLs itself at a chosen point (a fault wrapper inside it), as a
writer killed between two steps: the test then checks what the kill left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_until_killed(script: str, *args: str) -> None:
    """Runs ``script`` with ``args`` in a fresh interpreter (the repository importable) and asserts that
    it ended by SIGKILL, showing its stderr otherwise."""
    process = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=os.environ | {"PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert process.returncode == -signal.SIGKILL, process.stderr
