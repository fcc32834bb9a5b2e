"""The demo's scratch home is removed only once no process started for it is left (a job the control
plane launched outlives the control plane)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from control_plane.demo.stack import remove_scratch

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/environ").exists(),
    reason="the demo finds the processes still using its scratch home through /proc (Linux); no procfs here",
)


def test_a_scratch_home_in_use_is_kept_and_removed_once_free(tmp_path: Path) -> None:
    home = tmp_path / "aether-demo-x"
    (home / "dev").mkdir(parents=True)
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env=dict(os.environ, AETHER_HOME=str(home)),
    )
    try:
        kept = remove_scratch(home)
        assert f"processes {sleeper.pid}" in kept and str(home) in kept
        assert home.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert remove_scratch(home) == "" and not home.exists()
