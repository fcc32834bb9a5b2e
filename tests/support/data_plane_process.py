"""A ``python -m data_plane`` process for tests that start it as a user would (its flags, its exit), with
no control plane (a refused address: it serves its static models and the snapshot it is given)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.ports import refused_address


def start_data_plane(redis_url: str, home: Path, snapshot: Path, *flags: str) -> subprocess.Popen[str]:
    """Started in a process group of its own, so that a ``--workers`` data plane's workers are stopped with
    it; its output piped (text)."""
    return subprocess.Popen(
        [
            sys.executable, "-m", "data_plane", *flags,
            "--redis-url", redis_url,
            "--control-plane", refused_address(),
            "--snapshot-path", str(snapshot),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "AETHER_HOME": str(home)},
        start_new_session=True,
    )  # fmt: skip
