"""Writing a file that appears under its name only once complete (downloads, exports)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def replace_when_done(dest: Path) -> Iterator[BinaryIO]:
    """A binary file to write that replaces ``dest`` when the block ends without an error; on any error
    it is removed and ``dest`` is left as it was. The temporary file beside ``dest`` has a unique name:
    with a fixed one, two writers to one destination wrote into the same file and one of them renamed
    the mixture into place after checking only its own bytes."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial")
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        temp.replace(dest)
    finally:
        temp.unlink(missing_ok=True)
