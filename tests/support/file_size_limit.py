"""Running Python code in a fresh interpreter whose files may not grow past a size (``RLIMIT_FSIZE``,
with ``SIGXFSZ`` ignored): every write beyond it fails with the kernel's EFBIG, the real fault a full
disk or an exhausted quota gives a writer (ENOSPC, EDQUOT), without filling a disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


#: Run first in the new interpreter (not in a ``preexec_fn``, which is unsafe in a test process running
#: threads): a write past the limit then fails with EFBIG instead of killing the process by SIGXFSZ.
_PRELUDE = """
import resource as _resource, signal as _signal
_signal.signal(_signal.SIGXFSZ, _signal.SIG_IGN)
_resource.setrlimit(_resource.RLIMIT_FSIZE, ({limit}, {limit}))
"""


def start_with_file_limit(script: str, limit: int, *args: str) -> subprocess.Popen[str]:
    """``script`` with ``args`` running in a new interpreter (the repository importable) whose files may
    not grow past ``limit`` bytes; its stdin and stdout are pipes the test writes and reads, its stderr
    goes to the test's."""
    return subprocess.Popen(
        [sys.executable, "-c", _PRELUDE.format(limit=int(limit)) + script, *args],
        env=os.environ | {"PYTHONPATH": str(REPO_ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def run_with_file_limit(script: str, limit: int, *args: str) -> str:
    """Runs ``script`` like :func:`start_with_file_limit` to its end; its stdout (it must exit 0)."""
    process = start_with_file_limit(script, limit, *args)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, f"script exited {process.returncode}: {out}"
    return out
