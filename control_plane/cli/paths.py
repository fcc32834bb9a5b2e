"""Local files a command will write, checked before the command asks a server for anything: a training set
that takes minutes to build, or an audit export, should not be thrown away because its path was wrong."""

from __future__ import annotations

import tempfile
from pathlib import Path

from control_plane.cli.errors import FileProblem


def check_writable(path: str | Path, what: str) -> None:
    """Raises :class:`FileProblem` (``what``, ``path``, why) unless a file can be written at ``path``: it
    is a regular file or absent, and the nearest directory that exists above it (the writers create the
    missing ones) takes a new file. A URI (``s3://…``) is left to the write itself."""
    text = str(path)
    if "://" in text:
        return
    target = Path(text).expanduser().absolute()
    for folder in reversed(target.parents):  # from the root down: a file where a directory belongs
        if folder.exists() and not folder.is_dir():
            raise FileProblem(what, text, f"{folder} is not a directory")
    if target.exists() and not target.is_file():
        # Writing renames a temporary file over the target: never over a directory or a device.
        raise FileProblem(what, text, "is a directory" if target.is_dir() else "is not a regular file")
    folder = next(folder for folder in target.parents if folder.exists())
    try:  # the one honest test of permissions, read-only mounts and quotas: make a file there
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise FileProblem(
            what, text, f"cannot create a file in {folder}: {error.strerror or error}"
        ) from None
