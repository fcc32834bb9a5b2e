"""A uid of its own for every running attempt (``AETHER_JOB_UID_RANGE=FIRST-LAST``, opt-in), instead of one
job user for all jobs (``AETHER_JOB_USER``, ``job_user.py``).

Jobs running at the same time as one job user could read each other's folders and tokens: job A could
write into job B's run with B's token. With a range, each attempt runs as a uid of the range that no
running attempt holds and no process uses, with that uid as its gid (or ``AETHER_JOB_GROUP``), so its
``work`` folder (0700) and its token and spec (0600) are its alone, and its processes cannot be signalled
by another job's. No ``/etc/passwd`` entry is needed: the control plane (root, or with the capabilities
``job_user.py`` lists) switches to a bare uid; ``HOME`` is the job's ``work`` folder.

Which uid an attempt holds is read from the disk, not the database, so it survives a restart: the owner
of its job's ``work`` folder, which the job cannot hand to another uid, nor move (the job's folder is the
control plane's). A uid goes back to the range once its attempt has ended, which it does only once none
of its processes is left (``reaper.py``), and no process runs as it any more (:func:`uids_in_use`: what
escaped a launcher that was itself killed keeps its uid out of the range). An attempt keeps its job's
previous uid when that is free, else gets the free one released longest ago (its ``work`` folder is then
handed over). Before a uid is handed out, what it still owns outside the jobs folder is removed
(``uid_sweep.py``: ``/tmp``, ``/var/tmp``, ``/dev/shm``, SysV IPC), so the next job never finds what the
last one left (a copy of its token, a cache it would run); ``TMPDIR`` is the job's ``work/tmp``.

When every uid is held, the job waits, as it does for a GPU: it stays queued (saying so in its log) and
starts once an attempt ends; the range bounds how many jobs run at once. Standard library only.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from control_plane.jobs.files import JobFiles
from control_plane.jobs.job_user import WORK_FOLDER, JobUser
from control_plane.jobs.uid_sweep import sweep_uid

JOB_UID_RANGE_VARIABLE = "AETHER_JOB_UID_RANGE"
#: The highest uid Linux gives out: (uid_t)-1 means "unchanged" to the system calls.
MAX_UID = 2**32 - 2

_log = logging.getLogger("aether.jobs")


@dataclass(frozen=True)
class JobUidRange:
    """The uids ``first`` to ``last`` (inclusive) attempts run as; ``gid`` None = each uid's own."""

    first: int
    last: int
    gid: int | None = None

    @property
    def setting(self) -> str:
        """The setting, as the control plane's messages name it."""
        return f"{JOB_UID_RANGE_VARIABLE}='{self.first}-{self.last}'"

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, int) and self.first <= uid <= self.last

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def user(self, uid: int, home: Path) -> JobUser:
        """The job user of an attempt given ``uid`` (named by it: it may have no passwd entry)."""
        return JobUser(str(uid), uid, uid if self.gid is None else self.gid, str(home))


def work_owner(job_folder: Path) -> int | None:
    """The uid owning the job's ``work`` folder (not followed if a link), None when there is none."""
    try:
        return os.lstat(job_folder / WORK_FOLDER).st_uid
    except OSError:
        return None


def held_uids(uid_range: JobUidRange, running_folders: Iterable[Path]) -> set[int]:
    """The uids of the range that an attempt holds: those of the running jobs' ``work`` folders, and
    any that a process runs as."""
    owners = {work_owner(folder) for folder in running_folders}
    return {uid for uid in (*owners, *uids_in_use()) if isinstance(uid, int) and uid in uid_range}


class RangeUsers:
    """Hands the range's uids out to attempts (the supervisor's, one thread), a tick at a time: what is
    held is read once a tick (:meth:`new_tick`), not once per job waiting for a uid (a ``/proc`` scan each:
    80 jobs queued behind a range of one uid kept the supervisor busy and its cancels late).

    Before a uid is handed out, what it left in the shared folders and SysV IPC is removed
    (``uid_sweep.py``); a uid whose sweep fails is not handed out again by this control plane (said once
    in its log). Free uids go out least recently released first: those never handed out, lowest first,
    then the one released longest ago, so a uid is reused as late as the range allows."""

    def __init__(self, uid_range: JobUidRange) -> None:
        self.range = uid_range
        #: Uids whose leftovers could not be removed: never handed out again.
        self._quarantined: set[int] = set()
        #: When each uid was last seen released (a count, not a time), and the uids held when last looked.
        self._released: dict[int, int] = {}
        self._clock = itertools.count()
        self._last_held: set[int] = set()
        #: Jobs told (in their log) that they wait for a uid: told once, not once a tick.
        self._waiting: set[str] = set()
        self._running: list[Path] = []
        #: The uids held this tick, read on the first hand-out of the tick; None until then.
        self._held: set[int] | None = None
        #: Whether every uid was found held this tick: the jobs after wait without looking again.
        self.exhausted = False

    def new_tick(self, running_folders: Iterable[Path]) -> None:
        """Starts a tick: ``running_folders`` are the folders of the jobs running now."""
        if self._held is not None:
            self._last_held = self._held
        self._running = list(running_folders)
        self._held = None
        self.exhausted = False

    def next_user(self, job_id: str, job_folder: Path, log: Callable[[str], None]) -> JobUser | None:
        """The job user of the next attempt of ``job_id`` (whose folder is ``job_folder``; ``HOME`` its
        ``work`` folder); None, said once with ``log``, when every uid of the range is held."""
        if self._held is None:
            self._held = held_uids(self.range, self._running)
            for released in self._last_held - self._held:
                self._released[released] = next(self._clock)
        # The uid of the job's last attempt, if it had one: the work folder of a job never started is the
        # range's first uid's (made at submission), which would otherwise go to every new job.
        previous = work_owner(job_folder) if JobFiles(job_folder).pid_file(1).exists() else None
        while not self.exhausted:
            uid = self._choose(self._held, previous)
            if uid is None:
                self.exhausted = True
            elif problems := sweep_uid(uid, keep=(job_folder.parent,)):  # not the jobs' work folders
                self._quarantined.add(uid)
                _log.error(
                    "uid %d of %s is not handed out again: what it left cannot be removed: %s",
                    uid, self.range.setting, "; ".join(problems[:5]),
                )  # fmt: skip
            else:
                self._held.add(uid)  # this tick's next job must not get it too
                self._waiting.discard(job_id)
                return self.range.user(uid, job_folder / WORK_FOLDER)
        self._tell_waiting(job_id, log)
        return None

    def _choose(self, held: set[int], previous: int | None) -> int | None:
        """``previous`` (the job's last uid: its ``work`` folder is that uid's) when it is free, else the
        free uid least recently released; None when none is free."""
        blocked = held | self._quarantined
        if previous is not None and previous in self.range and previous not in blocked:
            return previous
        # Never released (since this control plane started) first: each is skipped, so this stops
        # after at most len(released) + len(blocked) + 1 uids, however large the range.
        for uid in range(self.range.first, self.range.last + 1):
            if uid not in blocked and uid not in self._released:
                return uid
        by_age = sorted(self._released.items(), key=lambda item: item[1])
        return next((uid for uid, _ in by_age if uid not in blocked), None)

    def none_left(self, job_id: str, files: JobFiles) -> bool:
        """Whether every uid was found held this tick: ``job_id`` (whose files are ``files``) then waits
        too, told once in its log, and is not looked at further (no read, no ``/proc`` scan)."""
        if self.exhausted:
            self._tell_waiting(job_id, files.append_log)
        return self.exhausted

    def _tell_waiting(self, job_id: str, log: Callable[[str], None]) -> None:
        if job_id not in self._waiting:
            self._waiting.add(job_id)
            aside = f" ({len(self._quarantined)} set aside: leftovers)" if self._quarantined else ""
            held = f"all {self.range.size} are held by running jobs{aside}"
            log(f"waiting for a uid of {self.range.setting}: {held}")


#: How many times :func:`uids_in_use` has scanned ``/proc`` (read by a test: once a tick at most).
_scans = 0


def scans() -> int:
    """How many ``/proc`` scans :func:`uids_in_use` has made in this process."""
    return _scans


def uids_in_use() -> set[int]:
    """The real, effective, saved and filesystem uids of every process not yet exited (``/proc``; zombies
    run nothing). Read from ``status``, not the owner of ``/proc/PID``, which is root for a process that
    made itself not dumpable."""
    global _scans
    _scans += 1
    found: set[int] = set()
    try:
        entries = list(os.scandir("/proc"))
    except OSError:  # no /proc (not Linux): the running attempts' folders alone say what is held
        return found
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            status = Path(entry.path, "status").read_text()
        except OSError:  # it exited meanwhile
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("State", "").strip().startswith(("Z", "X")):
            continue
        found.update(int(uid) for uid in fields.get("Uid", "").split())
    return found
