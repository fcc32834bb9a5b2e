"""The failed rank's error file for torchrun, written whole or not at all.

Under torchrun a rank's uncaught exception is written, as JSON, to the file ``TORCHELASTIC_ERROR_FILE``
names, and torchrun quotes it as the attempt's root cause. torch's own handler opens that file and writes
into it, and torchrun reads every failed rank's file as soon as it sees the rank gone: when a rank is
killed, its peer fails on the broken connection a moment later and writes its file while torchrun is
already reading it, finds it empty and dies on the JSON (``JSONDecodeError`` in
``_capture_process_failures``), so the attempt's log never named the rank that was lost. This handler
writes the same JSON to a temporary file beside it and renames it into place, so torchrun finds either
no file or a whole one.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import traceback
from collections.abc import Mapping

from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

ERROR_FILE_VARIABLE = "TORCHELASTIC_ERROR_FILE"


class WholeErrorFileHandler(ErrorHandler):
    """torch's ``ErrorHandler`` with an atomic write of the error file (module doc)."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self._environ = environ

    def _get_error_file_path(self) -> str | None:
        return self._environ.get(ERROR_FILE_VARIABLE)

    def record_exception(self, e: BaseException) -> None:
        path = self._get_error_file_path()
        if not path:
            return
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
