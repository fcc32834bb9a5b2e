"""``aetherctl`` starts without importing the demo's scenario: at the top of ``control_plane.cli.demo`` it
loaded the monitoring, retraining and training stack for every command (``dev status``, ``audit list``),
about a second of each invocation's start."""

from __future__ import annotations

import subprocess
import sys


def test_the_cli_does_not_import_the_demo_scenario_until_the_demo_runs() -> None:
    code = (
        "import sys, control_plane.cli.main as main\n"
        "from control_plane.cli.settings import CliSettings\n"
        "main.build_parser(CliSettings.from_env())\n"
        "loaded = sorted(name for name in sys.modules if name.startswith('control_plane.demo.'))\n"
        "assert loaded == ['control_plane.demo.world'], loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
