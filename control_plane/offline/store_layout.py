"""The offline store's layout and what it lists (split from ``store``)::

    <root>/<view>/v<version>/date=YYYY-MM-DD/<uuid>.parquet

The folder of a view version and of a date partition, and the views, versions, dates and data files the
store holds, each listing a snapshot. A store given ``uncounted`` leaves the files an open intent names
out of :meth:`StoreLayout.files`; one given ``counted`` refuses a version whose folder is missing while
ingestion counted rows into it. :class:`~control_plane.offline.store.OfflineStore` adds writing and
reading to it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection

import pyarrow.fs as pafs

from clients.errors import InvalidArgument
from clients.uris import redact_uri
from control_plane.offline.data_files import is_data_file
from control_plane.offline.listing import OfflineStoreUnreadable, list_folder
from control_plane.offline.merged import hidden_names
from control_plane.offline.roots import default_offline_root, open_filesystem
from control_plane.offline.store_errors import store_errors

PARQUET_SUFFIX = ".parquet"
DATE_PREFIX = "date="
#: A file being written is hidden under this prefix (``.*.tmp``) until it is complete; never listed.
TEMP_PREFIX = "."


class StoreLayout:
    """Where an offline store's files lie, and listings of them (module doc)."""

    def __init__(
        self,
        root: str | None = None,
        uncounted: Callable[[], Collection[str]] | None = None,
        counted: Callable[[str, int], int] | None = None,
    ) -> None:
        """``uncounted``: the paths of files whose rows are not counted yet, which :meth:`files` leaves out
        (``ingestion.intents.reader_filter``); None lists every complete file (a writer's own store).
        ``counted``: the rows ingestion counted as stored into a view version (``ingestion.counted``):
        :meth:`files` refuses a version whose folder is missing while it says there are some."""
        self.root = root if root is not None else default_offline_root()
        self._uncounted = uncounted
        self._counted = counted
        self.filesystem, self.base_path = open_filesystem(self.root)
        # A local file is renamed into place; an object store's is staged and copied (uploads.py).
        self._rename_into_place = self.filesystem.type_name == "local"

    def views(self) -> list[str]:
        """Views with a folder in the store, by name (``_datasets`` and hidden names are not views)."""
        infos = self._list_dir(self.base_path)
        return sorted(
            info.base_name
            for info in infos
            if info.type == pafs.FileType.Directory and not info.base_name.startswith((".", "_"))
        )

    def versions(self, view: str) -> list[int]:
        """Versions of ``view`` that have data."""
        infos = self._list_dir(f"{self.base_path}/{view}")
        names = [info.base_name for info in infos if info.type == pafs.FileType.Directory]
        return sorted(int(name[1:]) for name in names if name[:1] == "v" and name[1:].isdigit())

    def dates(self, view: str, version: int) -> list[dt.date]:
        """Event dates with a partition, oldest first."""
        return self._dates(view, version, self._list_dir(self._version_dir(view, version)))

    def _dates(self, view: str, version: int, infos: list[pafs.FileInfo]) -> list[dt.date]:
        found = []
        for info in infos:
            if info.type != pafs.FileType.Directory or not info.base_name.startswith(DATE_PREFIX):
                continue
            try:
                found.append(dt.date.fromisoformat(info.base_name[len(DATE_PREFIX) :]))
            except ValueError:
                continue  # not ours
        return sorted(found)

    def files(
        self, view: str, version: int, start: dt.datetime | None = None, end: dt.datetime | None = None
    ) -> list[str]:
        """Complete data files whose partition may hold event times in ``[start, end)``, oldest date first
        and in write order within a date. A snapshot: files written later are not in the list, which is
        what a multi-pass reader needs to see the same rows on every pass. With ``uncounted``, the files
        an open intent names are left out (module doc)."""
        first = utc(start, "start").date() if start is not None else None
        last = utc(end, "end").date() if end is not None else None
        paths: list[str] = []
        for day in self._dates(view, version, self._version_listing(view, version)):
            if (first is not None and day < first) or (last is not None and day > last):
                continue
            paths.extend(self.partition_files(self._partition_dir(view, version, day)))
        if self._uncounted is None or not paths:
            return paths
        # Intents read after the listing: a file is announced before it is written, so every listed file
        # not counted is named by an intent open now; read first, one announced after it would slip in.
        named = self._uncounted()
        return [path for path in paths if path not in named]

    def partition_files(self, partition: str) -> list[str]:
        """The data files of one partition folder in name order (``uncounted`` is applied by :meth:`files`):
        every listed file but those a merged file present replaced (:mod:`~control_plane.offline.merged`;
        only merged files' footers are read), so each row is read once whether or not its file was merged."""
        listed = {
            info.base_name: info.path
            for info in self._list_dir(partition)
            if info.type == pafs.FileType.File
            and info.base_name.endswith(PARQUET_SUFFIX)
            and not info.base_name.startswith((TEMP_PREFIX, "_"))
        }
        # The merged files' footers are read: one that cannot be is the store's error, as any read is.
        with store_errors(self.root, f"list {partition}", decoding=True):
            hidden = hidden_names(self.filesystem, partition, listed)
        return [listed[name] for name in sorted(listed) if name not in hidden]

    # -- paths -----------------------------------------------------------------------------------------

    def _version_dir(self, view: str, version: int) -> str:
        check_name(view)
        return f"{self.base_path}/{view}/v{version}"

    def is_data_file(self, path: str, view: str, version: int) -> bool:
        """Whether ``path`` is a name ``OfflineStore.write`` gives a data file of ``view`` version
        ``version`` here (``offline.data_files``): the intent recovery removes nothing else."""
        return is_data_file(self.base_path, path, view, version)

    def partition_path(self, view: str, version: int, day: dt.date) -> str:
        """The folder of one date partition (a filesystem path, without the URI scheme)."""
        return self._partition_dir(view, version, day)

    def _partition_dir(self, view: str, version: int, day: dt.date) -> str:
        return f"{self._version_dir(view, version)}/{DATE_PREFIX}{day.isoformat()}"

    def _list_dir(self, path: str) -> list[pafs.FileInfo]:
        """The folder's entries; none when it does not exist (no data yet); a file where a folder
        belongs is :class:`~control_plane.offline.listing.OfflineStoreUnreadable` (``listing``)."""
        infos = list_folder(self.filesystem, self.base_path, path, redact_uri(str(self.root)))
        return [] if infos is None else infos

    def _version_listing(self, view: str, version: int) -> list[pafs.FileInfo]:
        """The version folder's entries, for a reader. Its folder missing while ingestion counted rows
        stored into it (``counted``) is refused: the store is not the one ingestion wrote (another root,
        a volume not mounted), and reading it as empty built a training set of nulls. Nothing else
        removes a version's folder (compaction replaces files within a partition, the intent recovery
        removes only uncounted files), so a store ingestion wrote never trips this."""
        folder = self._version_dir(view, version)
        infos = list_folder(self.filesystem, self.base_path, folder, redact_uri(str(self.root)))
        if infos is not None:
            return infos
        rows = self._counted(view, version) if self._counted is not None else 0
        if rows > 0:
            raise OfflineStoreUnreadable(
                f"the offline store {redact_uri(str(self.root))} has no folder for feature view {view!r}"
                f" version {version} ({folder} does not exist), yet ingestion counted {rows} rows stored"
                " into it: the store is not the one ingestion wrote (AETHER_OFFLINE_ROOT), or its volume"
                " is not mounted; nothing was read"
            )
        return []


def utc(moment: dt.datetime, name: str) -> dt.datetime:
    if moment.tzinfo is None:
        raise InvalidArgument(f"{name} must carry a time zone")
    return moment.astimezone(dt.UTC)


def check_name(view: str) -> None:
    # The name becomes a path segment: refuse anything that could climb out of or hide in the root.
    if not view or "/" in view or "\\" in view or view.startswith((".", "_")):
        raise InvalidArgument(f"invalid feature view name {view!r}")
