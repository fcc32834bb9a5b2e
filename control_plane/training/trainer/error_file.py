"""The failed rank's error file for torchrun, written whole or not at all.

Under torchrun a rank's uncaught exception is written, as JSON, to the file ``TORCHELASTIC_ERROR_FILE``
names, and torchrun quotes it as the attempt's root cause. torch's own handler opens that file and writes
into it, and torchrun reads every failed rank's file as soon as it sees the rank gone: when a rank is
killed, its peer fails on the broken connection a moment later and writes its file while torchrun is
already reading it, finds it empty and dies on the JSON (``JSONDecodeError`` in
``_capture_process_failures``), so the attempt's log never named the rank that was lost. This handler
writes the same JSON to a temporary file beside it and renames it into place, so torchrun finds either
no file or a whole one.

torchrun names as the root cause the failed rank whose file has the earliest timestamp (whole seconds).
``record`` writes a rank's file only once its function has returned, so after ``process_group`` has torn
the group down, which is what makes the other ranks fail ("Connection closed by peer"): their files could
be stamped a second before the failed rank's, and the summary named one of them. :meth:`recorded_here`
writes the file where the exception is raised, inside the group, and ``record``'s own call for that
exception then writes nothing more.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

ERROR_FILE_VARIABLE = "TORCHELASTIC_ERROR_FILE"


class WholeErrorFileHandler(ErrorHandler):
    """torch's ``ErrorHandler`` with an atomic write of the error file (module doc)."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self._environ = environ
        self._recorded: BaseException | None = None  # the exception whose file is written

    @contextmanager
    def recorded_here(self) -> Iterator[None]:
        """Writes the error file of an exception raised inside at once, before the enclosing context
        managers exit (see the module doc), then lets it go on."""
        try:
            yield
        except Exception as exc:  # what ``record`` would record (it lets a SystemExit through)
            self.record_exception(exc)
            raise

    def _get_error_file_path(self) -> str | None:
        return self._environ.get(ERROR_FILE_VARIABLE)

    def record_exception(self, e: BaseException) -> None:
        if e is self._recorded:  # written where it was raised (recorded_here): keep that timestamp
            return
        path = self._get_error_file_path()
        if not path:
            return
        self._write(path, e)
        self._recorded = e

    def _write(self, path: str, e: BaseException) -> None:
        data = {  # torch's layout: torchrun reads these fields
            "message": {
                "message": f"{type(e).__name__}: {e}",
                "extraInfo": {"py_callstack": traceback.format_exc(), "timestamp": str(int(time.time()))},
            }
        }
        folder = os.path.dirname(path) or "."
        fd, temporary = tempfile.mkstemp(prefix=".error-", suffix=".json", dir=folder)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(data, out)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
