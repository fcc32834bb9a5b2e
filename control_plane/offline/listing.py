"""Listing the offline store's folders, telling a folder that is not there from one that cannot be read.

The store lists with ``allow_not_found``: a view, version or date with no data yet has no folder, and
that is no error. But pyarrow reports a path below a plain file (a view's folder replaced by a file, a
root that names a file) as not found too, so a store that could not be read listed as one without data,
and a training set was built from it with every feature null, no error anywhere. So an empty listing is
looked at again: the folder or one of its parents up to the store's root being a file is refused
(:class:`OfflineStoreUnreadable`); a folder that is truly absent is ``None`` to the caller, which may
know that data should be there (``OfflineStore``'s ``counted``).
"""

from __future__ import annotations

import posixpath

import pyarrow.fs as pafs

from clients.errors import OfflineStoreMisconfigured
from control_plane.offline.store_errors import store_errors


class OfflineStoreUnreadable(OfflineStoreMisconfigured):
    """The offline store's folders are not what the store wrote (a file where a folder belongs, a
    folder missing whose rows ingestion counted): a setup to fix, not a moment to wait out."""


def list_folder(
    filesystem: pafs.FileSystem, base_path: str, path: str, root: str
) -> list[pafs.FileInfo] | None:
    """The entries of the folder ``path`` (under ``base_path``), or None when it does not exist;
    :class:`OfflineStoreUnreadable` when it or a parent up to ``base_path`` is a file (``root``: the
    store's root as configured, for the message); another failure of the filesystem is the store's error
    (``store_errors``)."""
    with store_errors(root, f"list {path}"):
        infos: list[pafs.FileInfo] = filesystem.get_file_info(
            pafs.FileSelector(path, allow_not_found=True, recursive=False)
        )
    if infos:
        return infos
    folder = path
    while True:
        with store_errors(root, f"list {path}"):
            found = filesystem.get_file_info(folder).type
        if found == pafs.FileType.Directory:
            return [] if folder == path else None  # a parent is there: ``path`` is not
        if found == pafs.FileType.File:
            raise OfflineStoreUnreadable(
                f"the offline store {root} cannot be read: {folder} is a file, where the store keeps a"
                f" folder (listing {path}); move it away or point AETHER_OFFLINE_ROOT at the store"
            )
        if folder == base_path or len(folder) <= len(base_path):
            return None  # nothing up to the root: the store's root itself is missing
        parent = posixpath.dirname(folder)
        if parent == folder:
            return None
        folder = parent
