"""Emptying a process's Linux capability sets (``capset``, linux/capability.h version 3), for the job's
process after its switch to the job user (``launcher``) and for the short-lived child that kills an
attempt's uid (``reaper.signal_uid``): a process that is not root keeps its capabilities through a change
between two non-zero uids, so either would otherwise act with all of them."""

from __future__ import annotations

import ctypes
from pathlib import Path

_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def empty_capability_sets() -> int:
    """Empties this process's permitted, effective and inheritable sets (which empties the ambient set
    too); 0, or the ``errno`` of a refused ``capset``."""
    libc = ctypes.CDLL(None, use_errno=True)
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    if libc.capset(ctypes.byref(header), (_CapData * 2)()) != 0:
        return ctypes.get_errno() or -1
    return 0


def effective_capabilities() -> int | None:
    """This process's effective capabilities (``/proc/self/status``), None when unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return None
