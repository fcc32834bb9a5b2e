"""A job entrypoint whose log grows in phases a test releases: ``python -m
tests.integration.jobs.programs.phased_log --lines N --gate FILE [--gate FILE ...]`` prints N numbered
lines, then for each gate waits (at most 60 s) until its file exists and prints N more, and exits 0.
Each phase's last line is ``phase K done``, so a test can tell from the log that a phase was written."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=100)
    parser.add_argument("--gate", type=Path, action="append", default=[])
    args = parser.parse_args()
    _phase(0, args.lines)
    for phase, gate in enumerate(args.gate, start=1):
        deadline = time.monotonic() + 60
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        _phase(phase, args.lines)
    return 0


def _phase(phase: int, lines: int) -> None:
    for line in range(lines):
        print(f"phase {phase} line {line:05d} of a log followed across control-plane restarts", flush=True)
    print(f"phase {phase} done", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
