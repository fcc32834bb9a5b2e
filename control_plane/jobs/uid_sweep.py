"""Removes what a uid of ``AETHER_JOB_UID_RANGE`` left behind outside its job's folder, before the uid is
handed to another attempt (``uid_range.py``).

A uid goes to another job once its attempt has ended and no process runs as it. Whatever it still owns is
then that job's: a copy of the previous job's token left in ``/tmp`` (0600, but the same uid), a cache in
``/tmp/torchinductor_<uid>`` that the next job would import and run, a SysV shared memory segment. So
every file, link, socket or FIFO it owns in the folders any uid may write in (:data:`SHARED_FOLDERS`) is
removed, then the folders it owns, once emptied; and every SysV IPC object (shared memory, message queue,
semaphore set) it owns or created. Nothing of the uid runs meanwhile, so nothing of its own changes under
the sweep; other users' processes may, so the walk goes by open folders (``dir_fd``, ``O_NOFOLLOW``):
a folder swapped for a link while it is walked never leads the removal elsewhere. Links are removed, never
followed; another filesystem mounted below a shared folder (a mount point, or another device) is not
entered. What cannot be removed (a folder of the uid's still holding another user's files, an error) is
reported: the uid is then not handed out (``RangeUsers``). That includes a control plane run with the
capabilities of ``job_user.py`` instead of root whenever the uid left something: unlinking another uid's
file in the sticky ``/tmp`` needs ``CAP_FOWNER``, removing its SysV objects ``CAP_SYS_ADMIN``. Standard
library only (Linux).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path

#: The folders any uid may write in.
SHARED_FOLDERS = ("/tmp", "/var/tmp", "/dev/shm")
#: ``IPC_RMID`` of ``shmctl``, ``msgctl`` and ``semctl``: remove the object.
IPC_RMID = 0
_OPEN_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def sweep_uid(uid: int, keep: Iterable[Path] = (), folders: Iterable[str] = SHARED_FOLDERS) -> list[str]:
    """Removes what ``uid`` owns in ``folders`` and its SysV IPC objects, but not what is in the folders
    ``keep`` (the jobs folder, where the work folders of jobs are their uids'); what it could not, one
    line each ([] when everything is gone)."""
    problems: list[str] = []
    mounts = mount_points()
    kept = set()
    for path in keep:
        with contextlib.suppress(OSError):
            status = os.stat(path)
            kept.add((status.st_dev, status.st_ino))
    for folder in folders:
        _sweep_folder(folder, uid, mounts, kept, problems)
    _sweep_ipc(uid, problems)
    return problems


def mount_points() -> set[str]:
    """Where filesystems are mounted (``/proc/self/mountinfo``): a bind mount of a folder of the same
    filesystem has the same device, so the device alone does not show it."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return set()
    # The fifth field, with space, tab, newline and backslash written as octal escapes.
    return {_unescape(line.split()[4]) for line in lines if len(line.split()) > 4}


def _unescape(path: str) -> str:
    for escaped, plain in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        path = path.replace(escaped, plain)
    return path


class _Folder:
    """A folder being walked: open (so that it cannot be swapped for a link meanwhile), with the entries
    still to look at; ``name`` in its parent, removed once emptied when ``owned`` (the uid's)."""

    def __init__(self, fd: int, path: str, name: str, owned: bool) -> None:
        self.fd, self.path, self.name, self.owned = fd, path, name, owned
        with os.scandir(fd) as entries:
            self.entries = [entry.name for entry in entries]


def _sweep_folder(
    root: str, uid: int, mounts: set[str], kept: set[tuple[int, int]], problems: list[str]
) -> None:
    try:
        fd = os.open(root, _OPEN_FOLDER)
    except FileNotFoundError:  # not on this host; a link (ELOOP) is not the shared folder itself
        return
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            problems.append(f"{root}: {exc.strerror or exc}")
        return
    try:
        device = os.fstat(fd).st_dev
        stack = [_Folder(fd, root, "", owned=False)]
    except OSError as exc:
        os.close(fd)
        problems.append(f"{root}: {exc.strerror or exc}")
        return
    # Depth first, holding only the open folders from the root down to the one walked.
    while stack:
        folder = stack[-1]
        if not folder.entries:
            stack.pop()
            os.close(folder.fd)
            if folder.owned:  # emptied of the uid's entries: removed unless another user's are left
                _remove(folder.name, stack[-1].fd, folder.path, problems, folder=True)
            continue
        name = folder.entries.pop()
        path = os.path.join(folder.path, name)
        try:
            status = os.stat(name, dir_fd=folder.fd, follow_symlinks=False)
        except FileNotFoundError:  # removed meanwhile (another user's)
            continue
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror or exc}")
            continue
        if not stat.S_ISDIR(status.st_mode):
            if status.st_uid == uid:
                _remove(name, folder.fd, path, problems, folder=False)
            continue
        if status.st_dev != device or path in mounts:  # another filesystem: not the shared folder's
            continue
        if (status.st_dev, status.st_ino) in kept:  # by identity, not path: however it was named
            continue
        try:
            child = os.open(name, _OPEN_FOLDER, dir_fd=folder.fd)
        except FileNotFoundError:
            continue
        except OSError as exc:  # ELOOP: replaced by a link since (not the uid's: it runs nothing)
            if exc.errno != errno.ELOOP:
                problems.append(f"{path}: {exc.strerror or exc}")
            continue
        try:
            # What was opened, not what was looked at: it may have been swapped meanwhile.
            stack.append(_Folder(child, path, name, owned=os.fstat(child).st_uid == uid))
        except OSError as exc:
            os.close(child)
            problems.append(f"{path}: {exc.strerror or exc}")


def _remove(name: str, parent_fd: int, path: str, problems: list[str], *, folder: bool) -> None:
    try:
        if folder:
            os.rmdir(name, dir_fd=parent_fd)
        else:
            os.unlink(name, dir_fd=parent_fd)
    except FileNotFoundError:
        pass
    except OSError as exc:  # ENOTEMPTY: another user's entries in a folder of the uid's
        problems.append(f"cannot remove {path}: {exc.strerror or exc}")


def _sweep_ipc(uid: int, problems: list[str]) -> None:
    """Removes the SysV IPC objects that ``uid`` owns or created (``/proc/sysvipc``)."""
    libc = None
    for kind in ("shm", "msg", "sem"):
        try:
            lines = Path("/proc/sysvipc", kind).read_text().splitlines()
        except OSError:  # no SysV IPC here
            continue
        header = lines[0].split() if lines else []
        for line in lines[1:]:
            fields = dict(zip(header, line.split(), strict=False))
            if uid not in (int(fields.get("uid", -1)), int(fields.get("cuid", -1))):
                continue
            ident = int(fields[header[1]])  # shmid, msqid or semid
            libc = libc or ctypes.CDLL(None, use_errno=True)
            if kind == "sem":
                done = libc.semctl(ident, 0, IPC_RMID)
            else:
                done = getattr(libc, f"{kind}ctl")(ident, IPC_RMID, None)
            if done != 0 and (code := ctypes.get_errno()) not in (errno.EINVAL, errno.EIDRM):  # gone already
                problems.append(f"cannot remove SysV {kind} {ident}: {os.strerror(code)}")
