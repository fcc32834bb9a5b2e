"""What is left of a replica once its own process is gone: the rest of its process group.

Every replica runs in a session, and so a process group, of its own (its pid is the group's id); a
``--workers N`` replica's workers are in it, each with its lifeline watcher (:mod:`clients.lifeline`).
A replica killed as hung loses its parent process at once, but its workers end only when their lifeline
has told them to (SIGTERM: a healthy one drains) and, for a hung one that cannot drain, once their grace
is over. Until then they hold their ports, their memory and the replica's folder, so the manager keeps
the replica's number (and folder) taken until :func:`reap_group` has seen the group empty, and kills a
worker it knows to be hung at once (:func:`kill_member`).

Linux: members are found in /proc (zombies left out, as :func:`control_plane.jobs.identity.running_in_group`
does: one whose parent is gone may never be reaped where the container's init does not reap). Without
/proc there is nothing to look at, and the group counts as empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

from control_plane.jobs.identity import running_in_group

#: How often :func:`reap_group` looks at the group.
POLL_S = 0.1
#: How long a SIGKILLed group gets to be gone before :func:`reap_group` gives up looking.
KILLED_WAIT_S = 5.0


def members(pgid: int) -> list[int]:
    """The running (not zombie) processes of group ``pgid``; none where there is no /proc."""
    try:
        return running_in_group(pgid)
    except FileNotFoundError:
        return []


def kill_member(pid: int, pgid: int) -> bool:
    """SIGKILL for ``pid`` if it is a running member of group ``pgid`` (a pid recorded earlier may be
    another process's now: one outside the group is never signalled); whether it was sent."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    if fields[0] in ("Z", "X") or int(fields[2]) != pgid:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
        return True
    return False


async def reap_group(pgid: int, timeout_s: float) -> list[int]:
    """Returns once group ``pgid`` has no running member, SIGKILLing the whole group after ``timeout_s``;
    the members it had to kill (none when the group emptied in time)."""
    deadline = time.monotonic() + timeout_s
    while left := await asyncio.to_thread(members, pgid):
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(POLL_S)
    else:
        return []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + KILLED_WAIT_S
    while time.monotonic() < deadline:
        if not await asyncio.to_thread(members, pgid):
            break
        await asyncio.sleep(POLL_S)
    return left
