"""Local files a command will write, checked before the command asks a server for anything: a training set
that takes minutes to build, or an audit export, should not be thrown away because its path was wrong."""

from __future__ import annotations

from pathlib import Path

from clients.files import unwritable_reason
from control_plane.cli.errors import FileProblem


def check_writable(path: str | Path, what: str) -> None:
    """Raises :class:`FileProblem` (``what``, ``path``, why) unless a file can be written at ``path``
    (``clients.files.unwritable_reason``, which the control plane checks a server-side path with)."""
    reason = unwritable_reason(path)
    if reason is not None:
        raise FileProblem(what, str(path), reason)
