"""Finding a test's child processes by what they were started with (Linux /proc)."""

from __future__ import annotations

from collections.abc import Callable, Set
from pathlib import Path


def find_process(environment: Set[bytes], command: Callable[[list[bytes]], bool]) -> int | None:
    """The pid of a process whose environment holds every ``NAME=VALUE`` of ``environment`` and whose
    argv (NUL-split ``/proc/PID/cmdline``) ``command`` accepts; None when there is none (yet)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = set((entry / "environ").read_bytes().split(b"\0"))
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone, or not ours to read
            continue
        if environment <= environ and command(argv):
            return int(entry.name)
    return None
