"""Keeping the control plane's secrets out of reach of the processes it starts (jobs first of all).

By default jobs run as the control plane's own user, and a process may read another process of its user
through ``/proc/<pid>/environ`` (the environment the process was *started* with, whatever it changed
since) and ``/proc/<pid>/mem``. A job walked up its parents and read ``AETHER_ADMIN_TOKEN`` there. So once the
settings have read them, with auth on (without it any local process may write anyway),
:func:`withdraw_secrets`:

* removes :data:`SECRET_VARIABLES` from ``os.environ`` (and the C environment: no child started later
  inherits them);
* blanks them in the environment block the process was started with, which is what
  ``/proc/<pid>/environ`` shows (``unsetenv`` leaves it as it was): read by anyone who may read the
  file, root included;
* marks the process non-dumpable (``prctl(PR_SET_DUMPABLE, 0)``): ``/proc/<pid>/environ``, ``mem`` and
  ptrace are then refused to other processes of the same user (the values still live in the process's
  memory: the settings hold them). Root, or a process with ``CAP_SYS_PTRACE``, still reads everything.
  The control plane then leaves no core dump, and a debugger must attach as root.

Both are Linux mechanisms; elsewhere only ``os.environ`` changes. The one child that needs the tokens
from the environment, a deployment's data-plane replica (its own auth is configured by the same
variables), gets them back from :func:`withheld`. The launcher between the control plane and a job
never held them: the executor starts it with the job's allow-listed environment (``launch_env``).

What this does not do: keep same-user code from reading files the user may read, the admin token's
file (``AETHER_ADMIN_TOKEN_FILE``), other jobs' token files and the SQLite database among them, nor from
reading other processes of the user (a data-plane replica's environment, the shell that started the
control plane). A job token bounds what a *leaked* token can do; it does not contain hostile job code.

Running jobs as another user does (``AETHER_JOB_USER``, opt-in: ``control_plane.jobs.job_user``): the
job then runs with that uid and group and no supplementary group, in a folder of its own, and cannot
open the admin token's file, the database, the jobs folder's listing nor other jobs' folders (0700, the
control plane's) when they are the control plane's 0600/0700 files, nor read or trace the control plane,
the launcher or a replica (other uid). Still not contained: a job user of root or of the control plane's
uid (both refused), the default same-user setup, what the job user may read anyway (world-readable
files, anything else that user owns), and other jobs running at the same time as the same job user,
whose folders are open to it while they run. A container per job is the stronger boundary (see
docs/architecture.md)."""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterable
from pathlib import Path

#: The secrets the control plane reads from its environment (its settings keep them) and no child of it
#: needs but a replica: the tokens, and the database's and Redis's URLs, which may hold passwords.
SECRET_VARIABLES = (
    "AETHER_ADMIN_TOKEN", "AETHER_READONLY_TOKEN", "AETHER_TOKEN", "AETHER_DB_URL", "AETHER_REDIS_URL",
)  # fmt: skip

_PR_GET_DUMPABLE = 3
_PR_SET_DUMPABLE = 4
#: Fields of ``/proc/<pid>/stat`` (proc(5), numbered from 1): where the initial environment lies.
_ENV_START_FIELD, _ENV_END_FIELD = 50, 51

_withheld: dict[str, str] = {}


def withheld() -> dict[str, str]:
    """The variables :func:`withdraw_secrets` removed, for a child that must still be given them."""
    return dict(_withheld)


def withdraw_secrets(names: Iterable[str] = SECRET_VARIABLES) -> list[str]:
    """Removes ``names`` from the environment, blanks them where ``/proc/<pid>/environ`` shows them and
    makes the process non-dumpable (see the module docstring); returns the names that were set."""
    found = {name: os.environ[name] for name in names if name in os.environ}
    for name in found:
        del os.environ[name]  # unsetenv too
    _withheld.update(found)
    if sys.platform.startswith("linux"):
        _blank_initial_environment(set(found))
        _libc().prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    return sorted(found)


def dumpable() -> bool:
    """Whether this process is dumpable (True where the question does not apply)."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(_libc().prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0))


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _blank_initial_environment(names: set[str]) -> None:
    """Overwrites ``NAME=value`` of ``names`` with NUL bytes in the environment block the kernel set up
    at exec. Only once ``os.environ`` let go of them: no pointer of the C ``environ`` is left on them.
    Done only when the memory read back is the block ``/proc/self/environ`` shows."""
    if not names:
        return
    try:
        shown = Path("/proc/self/environ").read_bytes()
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start, end = int(fields[_ENV_START_FIELD - 3]), int(fields[_ENV_END_FIELD - 3])
    except (OSError, IndexError, ValueError):
        return
    if end - start != len(shown) or ctypes.string_at(start, end - start) != shown:
        return
    offset = 0
    for entry in shown.split(b"\0"):
        name = entry.partition(b"=")[0].decode("utf-8", "surrogateescape")
        if name in names:
            ctypes.memset(start + offset, 0, len(entry))
        offset += len(entry) + 1
