"""Local files of a command: those it reads (a spec, feedback records, corrected payloads: a path or ``-``
for standard input), and those it will write, checked before the command asks a server for anything: a
training set that takes minutes to build, or an audit export, should not be thrown away because its path
was wrong."""

from __future__ import annotations

import sys
from pathlib import Path

from clients.files import unwritable_reason
from control_plane.cli.errors import FileProblem


def check_writable(path: str | Path, what: str) -> None:
    """Raises :class:`FileProblem` (``what``, ``path``, why) unless a file can be written at ``path``
    (``clients.files.unwritable_reason``, which the control plane checks a server-side path with)."""
    reason = unwritable_reason(path)
    if reason is not None:
        raise FileProblem(what, str(path), reason)


def read_text_input(source: str, what: str) -> str:
    """The UTF-8 text of the file ``source`` (standard input for ``-``), or INVALID_ARGUMENT naming
    ``what`` and why it cannot be read: a file in another encoding (Latin-1, UTF-16) gave a traceback."""
    from clients.errors import InvalidArgument  # here, not to build the parser: it imports grpc

    shown = "<stdin>" if source == "-" else source
    try:
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"cannot read {what} {shown!r}: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = f"byte 0x{raw[exc.start]:02x} at offset {exc.start}"
        raise InvalidArgument(f"cannot read {what} {shown!r}: not UTF-8 text ({where})") from None
