"""The errors every ``aetherctl`` command may raise for ``main`` to turn into one line and an exit code.

* :class:`UsageError`: the command line itself is wrong (a malformed flag value) → ``aetherctl: error:
  <message>``, exit 2. Raised before any call to a server.
* :class:`FileProblem`: a local file the command reads or writes failed → ``error: <what>: <path>:
  <reason>``, exit 1. Any other ``OSError`` that reaches ``main`` is printed the same way, with the
  command as ``<what>``: a user's path is never worth a traceback.
"""

from __future__ import annotations

import os


class UsageError(Exception):
    """The command line itself is wrong (exit status 2)."""


class FileProblem(Exception):
    """``what`` failed on the local file ``path`` because of ``reason`` (exit status 1)."""

    def __init__(self, what: str, path: str, reason: str) -> None:
        super().__init__(": ".join(part for part in (what, path, reason) if part))
        self.what, self.path, self.reason = what, path, reason

    @classmethod
    def of(cls, what: str, error: OSError) -> FileProblem:
        """``error`` in the system's words (``No such file or directory``), without the errno that
        ``str(error)`` adds; pyarrow's OSErrors carry no ``strerror`` or filename, only their message."""
        path = "" if error.filename is None else os.fsdecode(error.filename)
        return cls(what, path, error.strerror or str(error))
