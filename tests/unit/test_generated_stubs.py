"""The checked-in gRPC stubs match what ``proto/`` generates (issue 2: a test fails when the generated code
is out of date). ``scripts/test.sh`` runs the same check before pytest; this test makes ``pytest`` alone
catch a proto edited without regenerating."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_generated_stubs_are_current() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
