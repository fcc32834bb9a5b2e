"""The launcher's hold on every process its job starts (Linux only). Standard library only: the launcher
imports it.

A process group does not hold a job's processes: any of them may leave it (``os.setsid()``, or a daemon's
double fork), and a signal to the group, or the group's emptiness, then says nothing of it. Such a
process outlived its attempt, holding the GPU the scheduler had given to the next job, and the job's
token. So the launcher makes itself a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``): a process
below it whose parent exits is re-parented to the launcher rather than to init, so every process the job
started stays the launcher's descendant, whatever group or session it moved to. When the job's main
process has ended (or the attempt is killed), :class:`Family` ends every descendant left and reaps it
(passes that signal what is left and reap every child that ended, until ``waitpid`` says none is left),
so nothing of the attempt runs once the launcher has gone. An attempt with a uid of its own
(``AETHER_JOB_UID_RANGE``) is signalled by that uid (:func:`signal_uid`), which a chain of processes
each forking its successor cannot outrun; without one, the passes list the descendants from ``/proc``,
and such a chain, forking faster than a pass lists it, holds the launcher (and the attempt, its devices)
until it stops by itself: its dead links are reaped as they go, so it does not fill the pid table.

Elsewhere than Linux there is no subreaper and no ``/proc``: only the job's main process is waited for,
and what left the group is out of reach, as it always was there.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from control_plane.jobs.capabilities import effective_capabilities, empty_capability_sets

# linux/prctl.h
_PR_SET_CHILD_SUBREAPER = 36
#: What the executor sends the launcher to kill the attempt: every process below it, SIGKILL. Not SIGKILL
#: to the launcher's group, which would kill the launcher first and leave whatever left the group to
#: init; the launcher also records the end (``killed by signal SIGKILL``).
KILL_SIGNAL = signal.SIGUSR1
#: How often the end of the processes a job left is looked at while they are given their grace.
_POLL_S = 0.05


def become_subreaper() -> bool:
    """Makes this process the child subreaper of what it starts; False where that does not exist (not
    Linux). An ``OSError`` when Linux refuses it (kernels before 3.4)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    return True


def descendants(root: int) -> list[int]:
    """The pids of the live processes below ``root`` (children first): zombies are left out, since
    signalling one does nothing (and its children, re-parented when it exited, are listed under their
    new parent). [] without ``/proc``."""
    children: dict[int, list[int]] = {}
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return []
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # it exited meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] not in ("Z", "X"):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    queue = list(children.get(root, ()))
    while queue:
        pid = queue.pop(0)
        found.append(pid)
        queue.extend(children.get(pid, ()))
    return found


def signal_uid(uid: int, signum: signal.Signals) -> bool:
    """Sends ``signum`` to every process of ``uid`` at once: ``kill(-1)`` from a short-lived child that
    has become ``uid`` (real, effective and saved). Linux delivers it walking the task list under its
    lock, and a fork that races it fails, so a chain of processes each forking its successor cannot slip
    past, where a pass over ``/proc`` is always behind it. Only for a uid that nothing else runs as (an
    attempt's of ``AETHER_JOB_UID_RANGE``): never root nor this process's own uid, for which it refuses
    (False); the child exits without signalling anything when its switch did not take."""
    if uid in (0, os.getuid(), os.geteuid()):
        return False
    pid = os.fork()
    if pid == 0:  # the child: nothing but the switch and the one signal, then out
        try:
            os.setresuid(uid, uid, uid)
            # A launcher that is not root keeps its capabilities through a switch between two non-zero
            # uids: with CAP_KILL, kill(-1) would reach every process of the host.
            empty_capability_sets()  # whether it took is checked next
            if os.getresuid() == (uid, uid, uid) and effective_capabilities() == 0:
                os.kill(-1, signum)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    return True


class Family:
    """The job's main process and whatever it started, all below this process (a subreaper).

    :meth:`wait_main` reaps every child that ends (orphans re-parented here included) until the main
    one has; :meth:`end_the_rest` then ends what is left. :meth:`kill_all` is safe in a signal handler
    (Python runs those between bytecodes of the main thread): it only sends signals (from a child it
    waits for itself, with ``uid``), never reaps another child, so the main process's status is reaped
    by :meth:`wait_main` alone.

    Each pass of the clean-up signals the live processes found and then reaps every child that has
    ended, so it costs what is there, not what is there times the number of passes (one reaped per pass
    made 2,000 leftovers take 90 s, and a forking chain's dead links pile up toward the pid table's size).
    With ``uid``, a uid only this attempt runs as, the signals go to that uid (:func:`signal_uid`), which
    no chain of forks outruns; without one, each pass lists the descendants from ``/proc``, and a chain
    forking its successors faster than a pass can list them keeps the launcher (and the attempt) until it
    stops."""

    def __init__(self, main: int, log: Callable[[str], None], uid: int | None = None) -> None:
        self.main = main
        self._log = log
        self._me = os.getpid()
        self._uid = uid
        self.main_code: int | None = None
        #: Set by :meth:`kill_all`: the attempt is being killed, no grace is given any more.
        self.killing = False

    def _signal_all(self, signum: signal.Signals, *, outside_group: bool = False) -> None:
        if not outside_group and self._uid is not None and signal_uid(self._uid, signum):
            return
        own_group = os.getpgid(0)
        for pid in descendants(self._me):
            try:
                if outside_group and os.getpgid(pid) == own_group:
                    continue
                os.kill(pid, signum)
            except (ProcessLookupError, PermissionError):  # gone meanwhile (or a zombie's pid reused)
                continue

    def forward_term(self) -> None:
        """SIGTERM to the descendants that left the launcher's process group: the group signal (a cancel,
        a timeout) reached the others directly, and they must not get it twice."""
        self._signal_all(signal.SIGTERM, outside_group=True)

    def kill_all(self) -> None:
        """SIGKILL to every descendant, the main process included; from now on to every one found."""
        self.killing = True
        self._signal_all(signal.SIGKILL)

    def _reap(self, *, block: bool) -> int | None:
        """Reaps one child: its pid, 0 when none has ended yet (``block`` False), None when no child is
        left."""
        try:
            pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return None
        if pid == self.main:
            self.main_code = os.waitstatus_to_exitcode(status)
        return pid

    def _reap_ended(self) -> bool:
        """Reaps every child that has ended; whether a child is left."""
        while reaped := self._reap(block=False):
            pass
        return reaped is not None

    def wait_main(self) -> int:
        """Waits for the main process, reaping whatever else ends meanwhile; its code as ``Popen``'s
        (negative: killed by that signal)."""
        while self.main_code is None:
            if self.killing:  # processes started since the last SIGKILL
                self.kill_all()
            if self._reap(block=True) is None:  # cannot be: the main process is a child until reaped
                raise ChildProcessError(f"the job's process {self.main} was not this process's child")
            self._reap_ended()  # the others that ended meanwhile: one pass each would be quadratic
        return self.main_code

    def end_the_rest(self, grace_s: float, ended: str) -> None:
        """Ends every descendant the main process left (``ended`` says how it ended): SIGTERM, then
        SIGKILL after ``grace_s`` (at once when the attempt is being killed), reaping each, until this
        process has no child left."""
        if not self._reap_ended():  # those that ended already
            return
        if not self.killing:
            self._log(f"the job ended ({ended}) but left processes running; sending them SIGTERM")
            self._signal_all(signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while not self.killing and time.monotonic() < deadline:
                if not self._reap_ended():
                    return
                time.sleep(_POLL_S)
            if not self.killing:
                self._log(f"processes the job left still running {grace_s:g}s after SIGTERM; sending SIGKILL")
        # Each pass kills what is there, the processes re-parented here since the last one included, then
        # reaps all that ended; once no child is left, nothing is below this process.
        while True:
            self._signal_all(signal.SIGKILL)
            if not self._reap_ended():
                return
            time.sleep(_POLL_S / 5)
