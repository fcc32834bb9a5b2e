"""Writing a file that appears under its name only once complete (downloads, exports), and checking
beforehand that one can be written at a path."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def replace_when_done(dest: Path, *, sync_folder: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write that replaces ``dest`` when the block ends without an error; on any error
    it is removed and ``dest`` is left as it was. The temporary file beside ``dest`` has a unique name:
    with a fixed one, two writers to one destination wrote into the same file and one of them renamed
    the mixture into place after checking only its own bytes. With ``sync_folder`` the folder is fsynced
    after the rename too, so that the new name survives a power loss (for caches that are trusted
    when found: without it the name may come back pointing at a file of another age)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial")
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        temp.replace(dest)
        if sync_folder:
            fsync_folder(dest.parent)
    finally:
        temp.unlink(missing_ok=True)


def private_folder(path: Path) -> Path:
    """``path`` (``~`` expanded), created when missing with every folder above it that is missing too, each
    with mode 0700: the state folders (``AETHER_HOME``, the jobs folder, the dev stack's) hold the metadata
    database, job logs and secrets, which no other local user should read. ``Path.mkdir(parents=True)``
    gives the parents it creates the umask's mode (0755), and a parent created that way may be
    ``AETHER_HOME`` itself. A folder that exists keeps its mode: whoever made it chose it (a data plane
    running as another user may read an artifact store under it)."""
    path = path.expanduser()
    missing = [folder for folder in (path, *path.parents) if not folder.exists()]
    for folder in reversed(missing):
        # exist_ok: another process may create it meanwhile (it then keeps that process's mode).
        folder.mkdir(mode=0o700, exist_ok=True)
    return path


def make_private(path: Path) -> bool:
    """Takes the group's and others' permissions off ``path``, an existing file or folder that Aether made
    and that holds secrets (a database, a job's folder), made before state was created private; whether
    it changed anything. Left alone: a missing path, a symbolic link (its target may be anyone's), and a
    path another user owns. Only for what Aether itself made: a folder the user made (``AETHER_HOME``)
    keeps the mode they gave it (:func:`private_folder`)."""
    try:
        status = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(status.st_mode) or status.st_uid != os.getuid() or not status.st_mode & 0o077:
        return False
    os.chmod(path, stat.S_IMODE(status.st_mode) & ~0o077)
    return True


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_APPEND) -> int:
    """A descriptor of ``path`` opened with ``flags``, the file created with mode 0600 when missing (an
    existing file keeps its mode). For files that may hold secrets: a job's log, a SQLite database."""
    return os.open(path, flags | os.O_CREAT, 0o600)


def fsync_folder(folder: Path) -> None:
    """Makes the names in ``folder`` (a rename into it) durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def unwritable_reason(path: str | Path) -> str | None:
    """Why no file can be written at ``path``, or None when one can: it is a regular file or absent, and
    the nearest directory that exists above it (writers create the missing ones) takes a new file. A URI
    (``s3://…``) is left to the write itself (None). Checked before work whose result would be lost."""
    text = str(path)
    if "://" in text:
        return None
    target = Path(text).expanduser().absolute()
    try:
        for folder in reversed(target.parents):  # from the root down: a file where a directory belongs
            if folder.exists() and not folder.is_dir():
                return f"{folder} is not a directory"
        if target.exists() and not target.is_file():
            # Writing renames a temporary file over the target: never over a directory or a device.
            return "is a directory" if target.is_dir() else "is not a regular file"
    except OSError as error:  # a name too long, a folder that cannot be searched
        return error.strerror or str(error)
    folder = next(folder for folder in target.parents if folder.exists())
    try:  # the one honest test of permissions, read-only mounts and quotas: make a file there
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        return f"cannot create a file in {folder}: {error.strerror or error}"
    return None
