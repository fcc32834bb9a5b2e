"""Which process a recorded pid named: the fleet records each process it lists (itself, its replicas) with
its start, ``BOOT_ID:TICKS`` (the boot it runs in and its start time in clock ticks since that boot, from
/proc), and ``aetherctl fleet status`` asks :func:`process_state` whether that process still runs. A pid
alone is not enough: once its process has ended the kernel hands the number out again, and a fleet gone
for days read as running (``kill(pid, 0)`` succeeded on whatever process had the number now), its stale
list shown as current. A reused pid starts later, and one reused after a reboot in another boot."""

from __future__ import annotations

import enum
import os
from pathlib import Path

from control_plane.jobs.identity import process_start_ticks

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


class ProcessState(enum.Enum):
    RUNNING = "running"  # the recorded process runs
    GONE = "gone"  # no process has the pid
    REPLACED = "replaced"  # another process has the pid now
    UNKNOWN = "unknown"  # some process has the pid; with no start recorded (or no /proc), whether it is
    # the recorded one cannot be told


def process_start(pid: int) -> str:
    """``BOOT_ID:TICKS`` of the running process ``pid``; empty when it cannot be told (no /proc, or no
    such process)."""
    ticks = process_start_ticks(pid)
    boot = _boot_id()
    return f"{boot}:{ticks}" if ticks is not None and boot else ""


def process_state(pid: int, recorded_start: str) -> ProcessState:
    """Whether the process recorded as ``pid`` with ``recorded_start`` (:func:`process_start`; empty in
    files written before starts were recorded) still runs. Judged by the pid alone only where there is
    nothing more to go on, and then RUNNING only if some process has the pid."""
    if pid <= 0:
        return ProcessState.GONE
    if recorded_start and _boot_id():
        now = process_start(pid)
        if not now:
            return ProcessState.GONE
        return ProcessState.RUNNING if now == recorded_start else ProcessState.REPLACED
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return ProcessState.GONE
    except PermissionError:  # someone else's process: it exists
        pass
    return ProcessState.UNKNOWN


def _boot_id() -> str:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return ""
