"""Running jobs as another OS user (``AETHER_JOB_USER``, opt-in): who that is, whether this process may
switch to it, and what it can reach. Standard library only: the launcher imports it.

Without it a job runs as the control plane's user and may read whatever that user may: the admin token's
file, the SQLite database, other jobs' folders (``control_plane.process_secrets``). With it:

* the control plane (and the launcher, which records the job's end) stay its own user; only the job's
  process, and whatever it starts, runs as the job user, with the job user's group
  (``AETHER_JOB_GROUP``, default its primary group) and no supplementary group at all;
* the job's folder stays the control plane's, so nothing the control plane reads or appends to there
  (the log, the spec, the pid and exit records) can be swapped for a link by the job. While an attempt
  runs the folder is ``0710`` with the job's group (entered, not listed); between attempts and after
  the job it is ``0700`` again. What the job writes lives in a ``work`` folder inside, owned by the job
  user (``0700``): ``AETHER_CHECKPOINT_DIR`` is ``work/checkpoints`` and ``outputs.json``, a trained
  model and the dataset pins go next to it. The job's token file and spec are the job user's (``0600``);
* the jobs folder is made ``0711`` (entered, not listed); every folder above it must already let the job
  user through: the control plane refuses to start otherwise, naming the folder;
* the control plane must be able to switch users: root, or ``CAP_SETUID``, ``CAP_SETGID``, ``CAP_CHOWN``,
  ``CAP_DAC_OVERRIDE`` and ``CAP_KILL``, with ``CAP_SETUID``, ``CAP_SETGID`` and ``CAP_KILL`` ambient too
  (systemd's ``AmbientCapabilities=``), so that the launcher keeps them across ``exec``. The job keeps
  none of them: the launcher empties its capability sets and sets ``no_new_privs`` before the job's
  ``exec`` (a change between two non-zero uids would keep them all). The tests exercise root and, with
  capsh, such a user.

What the job user needs besides: read access to the interpreter (or virtual environment) and the job's
code (the launcher checks the interpreter, the entrypoint and the working folder, and fails the job at
once saying what it cannot read), to the GPU device files (the NVIDIA driver makes them 0666), and, for a
dataset named by its hash (read from the offline store directly, not through the control plane), to the
offline store; a point-in-time query is served by the control plane and needs nothing.

What is still in reach of a job: whatever the job user itself may read (its home, world-readable files),
and every other job running *at the same time* as the same job user (their folders are open to it while
they run, and processes of one user may signal each other): ``AETHER_JOB_UID_RANGE`` (``uid_range.py``)
gives each running attempt a uid of its own instead, with the same layout and needs. A job user of uid
0, or the control plane's own, contains nothing and is refused.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

#: Linux capability numbers (capability.h).
CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_KILL, CAP_SETGID, CAP_SETUID = 0, 1, 5, 6, 7
#: What the control plane needs in its effective set (to hand files to the job user, read its outputs,
#: signal its processes), and what its launcher must keep across exec (to start the job as it).
EFFECTIVE_CAPS = {
    "CAP_CHOWN": CAP_CHOWN, "CAP_DAC_OVERRIDE": CAP_DAC_OVERRIDE, "CAP_KILL": CAP_KILL,
    "CAP_SETGID": CAP_SETGID, "CAP_SETUID": CAP_SETUID,
}  # fmt: skip
AMBIENT_CAPS = {"CAP_KILL": CAP_KILL, "CAP_SETGID": CAP_SETGID, "CAP_SETUID": CAP_SETUID}

#: The name of the job user's folder inside a job's folder.
WORK_FOLDER = "work"
#: The job's folder while an attempt runs as the job user: entered by the job's group, never listed.
OPEN_JOB_FOLDER_MODE = 0o710
#: The jobs folder: entered by anyone (a job user reaches its own job's folder), listed by nobody else.
JOBS_FOLDER_MODE = 0o711


@dataclass(frozen=True)
class JobUser:
    """The OS user (and group) jobs run as."""

    name: str
    uid: int
    gid: int
    #: The user's home folder (``HOME`` of its jobs).
    home: str

    def describe(self) -> str:
        return f"{self.name} (uid {self.uid}, gid {self.gid})"


def missing_capabilities() -> list[str]:
    """What this process lacks to run jobs as another user: [] for root; else the capabilities missing
    from its effective set and, so that its launcher keeps them across ``exec``, its ambient set."""
    if os.geteuid() == 0:
        return []
    sets = _capability_sets()
    missing = [name for name, bit in EFFECTIVE_CAPS.items() if not sets.get("CapEff", 0) >> bit & 1]
    missing += [
        f"ambient {name}" for name, bit in AMBIENT_CAPS.items() if not sets.get("CapAmb", 0) >> bit & 1
    ]
    return missing


def _capability_sets() -> dict[str, int]:
    if not sys.platform.startswith("linux"):
        return {}
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.startswith("Cap"):
            found[key] = int(value.strip(), 16)
    return found


def blocked_for(path: Path, uid: int, gid: int, *, read: bool = True) -> str | None:
    """Why ``uid``/``gid`` (with no supplementary group) cannot reach ``path`` by its mode bits: a folder
    on the way it may not enter, or the file itself it may not read (``read``); None when it can. ACLs
    and other security modules are not looked at."""
    path = Path(os.path.abspath(path))
    for folder in reversed(path.parents):
        problem = _lacks(folder, uid, gid, stat.S_IXUSR, "enter")
        if problem:
            return problem
    if read:
        return _lacks(path, uid, gid, stat.S_IRUSR, "read")
    return None


def _lacks(path: Path, uid: int, gid: int, owner_bit: int, doing: str) -> str | None:
    try:
        status = os.stat(path)
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    if uid == 0:
        return None
    mode = status.st_mode
    if status.st_uid == uid:
        allowed = mode & owner_bit
    elif status.st_gid == gid:
        allowed = mode & (owner_bit >> 3)
    else:
        allowed = mode & (owner_bit >> 6)
    if allowed:
        return None
    owner = f"owner uid {status.st_uid}, group {status.st_gid}"
    return f"it may not {doing} {path} ({owner}, mode {stat.S_IMODE(mode):04o})"
