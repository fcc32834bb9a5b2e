"""Who runs an attempt, told through files rather than the database, so it survives a control plane that
dies between starting a process and recording it. Standard library only: the launcher imports it.

* :func:`process_start_ticks` identifies a process beyond its pid (a pid reused later starts later).
* :func:`running_in_group` lists what still runs in a process group (an ended attempt's leftovers).
* :func:`claim` writes a record to a path unless one is there already, atomically and exclusively. The
  launcher claims its attempt's pid file with its own identity before it starts the job; a control
  plane that finds an attempt RUNNING with no recorded process claims the same file as given up. Exactly
  one of them wins: either the control plane finds the launcher (and adopts it, or kills what is left of
  it), or the launcher finds the attempt given up and never starts the job. Devices are never freed
  while the attempt's process may still start or run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: The pid-file record of a launcher: ``{"pid": N, "start_ticks": N}``; of a given-up attempt:
#: ``{"given_up": true, "by": PID}``.
GIVEN_UP = "given_up"


def process_start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, from /proc), None when it does not exist or
    has exited (a zombie). With the pid it identifies a process: a pid reused later starts later."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def running_in_group(pgid: int) -> list[int]:
    """The pids of the processes in group ``pgid`` that have not exited (zombies are left out: they run
    nothing and hold no device, and one whose parent is gone may never be reaped where the container's
    init does not reap, so counting it would keep the group alive for good)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # it exited meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def claim(path: Path, record: dict[str, Any]) -> dict[str, Any] | None:
    """Writes ``record`` as JSON to ``path`` if no record is there yet, and returns None; otherwise
    returns the record found, leaving it as it is. The file appears complete or not at all (written
    under a temporary name, flushed, then hard-linked, which fails if the name exists), so of two
    claimants, in two processes, exactly one wins and the other reads the winner's whole record."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        with open(temp, "w", encoding="utf-8") as sink:
            json.dump(record, sink)
            sink.flush()
            os.fsync(sink.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            found: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return found
    finally:
        temp.unlink(missing_ok=True)
    # The new name lives in the folder: without this fsync a power loss could forget the claim.
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return None
