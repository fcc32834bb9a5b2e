"""Ties child processes to this process's life, however it ends: SIGKILL and the OOM killer included.

This process holds the write end of one pipe, its *lifeline*, for as long as it lives; the kernel closes
it when the process dies, by any means. A tied child is started through this file as a wrapper
(:func:`tied`: ``python -I lifeline.py FD -- COMMAND...``), which starts a watcher holding the pipe's
read end and then execs COMMAND in its own place, so the child's pid, command line and exit status are
COMMAND's. When the lifeline reaches its end the watcher sends COMMAND SIGTERM, its ordinary clean stop
(a plane drains, redis-server writes its append-only file), and SIGKILL if it is still there after
:data:`GRACE_S`, or the grace its parent gave (``tied(command, grace_s=...)``: a command that is known to
stop sooner, or to hang, need not hold on to its ports and memory that long). The watcher ends as soon as
COMMAND does (a second pipe, whose write end COMMAND holds).

Why not ``PR_SET_PDEATHSIG``: it is Linux-only, fires when the *thread* that started the child ends
(not the process), and must be set in a ``preexec_fn``, which is unsafe in a process that runs threads
(the demo and the fleet both do). Why a watcher process rather than each program reading the pipe:
redis-server cannot, and one mechanism then serves every command, and its children in turn (a child
that ties its own children, as ``data_plane --workers`` does, takes them along when it ends).

The watcher runs with an empty environment, in ``/``, with its standard streams on the null device: it
holds no pipe a caller reads to its end, and is never taken for a user of the stack's home
(``control_plane.demo.stack.users_of`` looks for ``AETHER_HOME`` in the environment, or the folder).

Standard library only: the wrapper and the watcher run this file as a script, before any package import.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from collections.abc import Sequence

#: Seconds between the SIGTERM the watcher sends and its SIGKILL (a replica's default stop timeout).
GRACE_S = 30.0

_lock = threading.Lock()
_owner = 0  # the pid that created the pipe: a forked child makes a lifeline of its own
_ends: tuple[int, int] = (-1, -1)


def _read_end() -> int:
    """The read end of this process's lifeline, made on first use. Both ends are non-inheritable, so a
    child gets the read end only where it is passed on (``pass_fds``) and the write end never: it stays
    open in this process alone until the process ends."""
    global _owner, _ends
    with _lock:
        if _owner != os.getpid():
            _ends = os.pipe()
            _owner = os.getpid()
        return _ends[0]


def tied(command: Sequence[str], grace_s: float = GRACE_S) -> tuple[list[str], tuple[int, ...]]:
    """``command`` wrapped so that it ends when this process does (SIGTERM, then SIGKILL after
    ``grace_s``), and the descriptors the wrapper needs: start it with ``pass_fds`` set to them
    (``subprocess.Popen`` and ``asyncio.create_subprocess_exec`` both take it)."""
    fd = _read_end()
    script = os.path.abspath(__file__)
    return [sys.executable, "-I", script, str(fd), "--grace", f"{grace_s:g}", "--", *command], (fd,)


# the wrapper and the watcher (run as a script) ------------------------------------------------------


def _wrap(lifeline: int, command: list[str], grace_s: float = GRACE_S) -> int:
    """Starts the watcher, then becomes ``command``."""
    death_read, death_write = os.pipe()
    target = os.getpid()
    os.set_inheritable(lifeline, True)
    os.set_inheritable(death_read, True)
    watcher = [sys.executable, "-I", "-S", os.path.abspath(__file__), "--watch",
               str(lifeline), str(death_read), f"{grace_s:g}", str(target)]  # fmt: skip
    if os.fork() == 0:
        try:
            os.close(death_write)
            os.chdir("/")
            null = os.open(os.devnull, os.O_RDWR)
            for std in (0, 1, 2):
                os.dup2(null, std)
            # A Ctrl-C meant for the command's process group must not end the watcher before the command.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            os.execve(sys.executable, watcher, {})
        finally:
            os._exit(127)
    os.close(death_read)
    os.close(lifeline)
    os.set_inheritable(death_write, True)  # held by the command until it ends: the watcher's cue to go
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"cannot run {command[0]!r}: {exc}", file=sys.stderr)
    return 127


def _ended(fd: int, ready: list[int]) -> bool:
    return fd in ready and not os.read(fd, 4096)


def _watch(lifeline: int, death: int, target: int, grace_s: float = GRACE_S) -> int:
    """Waits for the lifeline's end, then stops ``target`` (this process's parent); returns when
    ``target`` ends first. Only ``getppid() != target`` says the target has ended (this process then has
    another parent, so a reused pid is never signalled): the end of the death pipe is a cue to look, not
    proof, since a command that closes descriptors it did not open (``closerange``, a daemon's start)
    ends the pipe too, and a watcher that left then left the command untied, and a zombie behind."""
    watched = [lifeline, death]
    while True:
        ready = select.select(watched, [], [], 1.0)[0]
        if death in watched and _ended(death, ready):
            watched.remove(death)  # from here the poll below alone tells when the target has gone
        if os.getppid() != target:
            return 0
        if _ended(lifeline, ready):
            break
    os.kill(target, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        ready = select.select([death] if death in watched else [], [], [], 0.5)[0]
        if death in watched and _ended(death, ready):
            watched.remove(death)
        if os.getppid() != target:
            return 0
    if os.getppid() == target:
        os.kill(target, signal.SIGKILL)
    return 0


def _main(argv: list[str]) -> int:
    if argv[:1] == ["--watch"]:  # --watch LIFELINE DEATH GRACE_S TARGET (the target last: tests look for it)
        lifeline, death, grace, target = argv[1:5]
        return _watch(int(lifeline), int(death), int(target), float(grace))
    grace_s = GRACE_S
    if argv[1:2] == ["--grace"] and len(argv) > 2:
        grace_s = float(argv[2])
        argv = [argv[0], *argv[3:]]
    if len(argv) < 3 or argv[1] != "--" or not argv[0].isdigit():
        print("usage: python lifeline.py FD [--grace SECONDS] -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    return _wrap(int(argv[0]), argv[2:], grace_s)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
