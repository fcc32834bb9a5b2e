"""Sweeping the hidden temporary files that writers killed mid-write leave behind (split from ``store``):
a data file's, a dataset record's or a copy's ``.*.tmp`` under a local root, or the hidden staged objects
under an object store's folder. Readers never list them; left, they only take space
(``OfflineStore.sweep_stale_temps``, ``datasets.sweep_stale_copies``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

import pyarrow.fs as pafs

from control_plane.offline.store_layout import TEMP_PREFIX
from control_plane.offline.uploads import STALE_TEMP_AGE_S


def _hidden_temp(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) and name.endswith(".tmp")


def sweep_stale_temps(
    folder: str, older_than_s: float = STALE_TEMP_AGE_S, is_temp: Callable[[str], bool] = _hidden_temp
) -> int:
    """Removes the files under the local ``folder`` whose name ``is_temp`` (by default hidden ``.*.tmp``)
    and that were last written more than ``older_than_s`` ago (younger ones may belong to a live writer
    in another process); returns how many. See :meth:`OfflineStore.sweep_stale_temps`."""
    cutoff = time.time() - older_than_s
    removed = 0
    for parent, _, names in os.walk(folder):  # links are not followed out of the root
        for name in names:
            if not is_temp(name):
                continue
            path = os.path.join(parent, name)
            try:
                if os.lstat(path).st_mtime < cutoff:
                    os.unlink(path)
                    removed += 1
            except FileNotFoundError:  # its writer finished or gave up meanwhile
                continue
    return removed


def sweep_stale_objects(
    filesystem: pafs.FileSystem,
    folder: str,
    *,
    recursive: bool,
    older_than_s: float = STALE_TEMP_AGE_S,
    is_temp: Callable[[str], bool] = _hidden_temp,
) -> int:
    """:func:`sweep_stale_temps` for ``folder`` on an object store: removes the objects whose name
    ``is_temp`` and that were last modified more than ``older_than_s`` ago; returns how many."""
    cutoff_ns = time.time_ns() - int(older_than_s * 1e9)
    selector = pafs.FileSelector(folder, allow_not_found=True, recursive=recursive)
    removed = 0
    for info in filesystem.get_file_info(selector):
        if info.type != pafs.FileType.File or not is_temp(info.base_name):
            continue
        if info.mtime_ns is None or info.mtime_ns >= cutoff_ns:
            continue
        with contextlib.suppress(FileNotFoundError):  # its writer removed it meanwhile
            filesystem.delete_file(info.path)
            removed += 1
    return removed
