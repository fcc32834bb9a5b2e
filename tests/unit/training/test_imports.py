"""The control plane server, and the SDK modules it may load (spec, context), never import torch."""

from __future__ import annotations

import subprocess
import sys


def test_control_plane_server_does_not_import_torch() -> None:
    code = (
        "import sys, control_plane.server, control_plane.api.jobs, control_plane.training.context\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
