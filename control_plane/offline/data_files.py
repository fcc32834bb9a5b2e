"""Which paths are data files an offline store's ``write`` names:
``<base>/<view>/v<version>/date=YYYY-MM-DD/<uuid>.parquet``, the UUID a time-ordered (version 7) one in
its canonical lowercase form (``data_file_writes.time_ordered_uuid``).

The intent recovery (``control_plane.ingestion.intents``) removes only files of that form under its own
store's base path, for the view and version the intent names: an intent row that names anything else
(corrupt, tampered with, or written against another root) is never acted on. Every segment is matched
whole, so no ``..``, ``.``, empty segment or hidden name can pass.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Sequence

import pyarrow.fs as pafs

# As store_layout.check_name: no separator, no leading '.' or '_'.
_VIEW = re.compile(r"[^/\\._\x00][^/\\\x00]*")
_NAME = re.compile(
    r"date=(\d{4}-\d{2}-\d{2})/"
    r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\.parquet"
)


def is_data_file(base_path: str, path: str, view: str, version: int) -> bool:
    """Whether ``path`` is a name the store at ``base_path`` gives a data file of ``view`` version
    ``version`` (module doc)."""
    if not isinstance(path, str) or not isinstance(view, str) or _VIEW.fullmatch(view) is None:
        return False
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        return False
    prefix = f"{base_path}/{view}/v{version}/"
    if not path.startswith(prefix):
        return False
    match = _NAME.fullmatch(path[len(prefix) :])
    if match is None:
        return False
    try:
        dt.date.fromisoformat(match.group(1))
    except ValueError:
        return False
    return True


def remove_data_files(filesystem: pafs.FileSystem, paths: Sequence[str]) -> bool:
    """Removes ``paths`` (one already gone counts as removed); True, or the filesystem's error (OSError,
    or pyarrow's ArrowInvalid, a ValueError, for a path it refuses)."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            filesystem.delete_file(path)
    return True
