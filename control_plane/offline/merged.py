"""Merged data files (made by :mod:`control_plane.offline.compaction`): their names, the record of the
files each replaced, and finding a replaced file's rows in one.

A merged file holds the rows of a run of files of one date partition, concatenated in name order, and
names them in its Parquet footer's key-value metadata (:data:`REPLACED_KEY`, outside the Arrow schema;
pyarrow adds it to the batches it reads, and :func:`without_record` takes it off again, so a reader
gets the sources' schema and metadata exactly): each source with its row count, and, for a source that was a
merged file itself, the sources that one replaced, recursively. So every name a merged file ever
replaced, however many compactions deep, is in the footer of the merged file that holds its rows now,
at a known row range.

Names: a merged file is ``<first source's UUID>-c<32 hex>.parquet``. Readers order files by name (the
tie order of the point-in-time join), and a run is a contiguous stretch of the names visible to
readers, so the merged name must sort where the run did against every other visible name. Another
visible name differs from the run's first name within the 36 characters of the UUID (two visible
names never share one: a merged file takes its first source's UUID and hides that source), so it
compares with the merged name as it did with the first source: every name before the run stays
before, every name after it stays after. ``-`` sorts before ``.``, so the merged name comes just before
the first source's own name, which is hidden.

This module reads footers through any ``pyarrow.fs`` filesystem and knows nothing of the store's layout
beyond one partition folder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from control_plane.offline.store_errors import UndecodableFile, decoding_footer

REPLACED_KEY = b"aether.replaced"
_Data = TypeVar("_Data", pa.RecordBatch, pa.Table)
_FORMAT = 1
_UUID_CHARS = 36
_SUFFIX = ".parquet"
#: A name the store writes: a UUID (lowercase hex, dashes in the UUID places) and ``.parquet``.
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_WRITTEN_NAME = re.compile(rf"{_UUID}\.parquet")
_MERGED_NAME = re.compile(rf"{_UUID}-c[0-9a-f]{{32}}\.parquet")


@dataclass(frozen=True)
class Replaced:
    """One source of a merged file: its name, its rows, and what it replaced when it was merged itself."""

    name: str
    rows: int
    sources: tuple[Replaced, ...] = ()


@dataclass(frozen=True)
class MergedRecord:
    """The footer record of a merged file: when it was made (µs since 1970, UTC) and its sources in
    order (its rows are theirs, concatenated)."""

    compacted_at_us: int
    sources: tuple[Replaced, ...]

    def names(self) -> Iterator[str]:
        """Every name the merged file replaced, at any depth."""
        return _names(self.sources)


@dataclass(frozen=True)
class Located:
    """Where a replaced file's rows are now: rows ``[offset, offset + rows)`` of ``path``."""

    path: str
    offset: int
    rows: int


def is_written_name(name: str) -> bool:
    """A data file the store wrote (not a merged one)."""
    return _WRITTEN_NAME.fullmatch(name) is not None


def is_merged_name(name: str) -> bool:
    return _MERGED_NAME.fullmatch(name) is not None


def merged_name(first_source: str, token: str) -> str:
    """The name of a file merging a run that starts with ``first_source`` (module doc); ``token`` is 32
    hex digits that make it unique."""
    return f"{first_source[:_UUID_CHARS]}-c{token}{_SUFFIX}"


def without_record(batch: _Data) -> _Data:
    """``batch`` (or a table) read from a merged file without the record: pyarrow's readers add the
    footer's key-value metadata to what they read, and a reader must get the sources' schema."""
    metadata = batch.schema.metadata
    if not metadata or REPLACED_KEY not in metadata:
        return batch
    rest = {key: value for key, value in metadata.items() if key != REPLACED_KEY}
    return batch.replace_schema_metadata(rest or None)


def encode_record(record: MergedRecord) -> bytes:
    body = {"format": _FORMAT, "compacted_at_us": record.compacted_at_us, "sources": _encode(record.sources)}
    return json.dumps(body, separators=(",", ":")).encode()


def decode_record(raw: bytes, path: str) -> MergedRecord:
    """The record ``raw`` of the merged file at ``path``; :class:`UndecodableFile` naming the file for one
    that is not what :func:`encode_record` wrote (its bytes damaged: not UTF-8, not JSON, or JSON of
    another shape)."""
    try:
        body = json.loads(raw)
        return MergedRecord(int(body["compacted_at_us"]), _decode(body["sources"]))
    except (ValueError, KeyError, TypeError, IndexError) as exc:  # UnicodeDecodeError is a ValueError
        raise UndecodableFile(
            f"the record of the files the merged file {path} replaced does not decode: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def read_record(filesystem: pafs.FileSystem, path: str) -> MergedRecord | None:
    """The record in the footer of the merged file at ``path``; None when the file is gone (a newer
    merged file replaced it, and names it). Only the footer is read; one that does not decode is
    :class:`UndecodableFile` naming the file."""
    try:
        with filesystem.open_input_file(path) as source, decoding_footer(path):
            metadata = pq.ParquetFile(source).metadata.metadata or {}
    except FileNotFoundError:
        return None
    raw = metadata.get(REPLACED_KEY)
    # A file named like a merged one without a record replaced nothing (not one of ours, or damaged).
    return decode_record(raw, path) if raw is not None else MergedRecord(0, ())


def hidden_names(filesystem: pafs.FileSystem, partition: str, names: Iterable[str]) -> set[str]:
    """Of a partition's listed data files ``names``, those a reader must leave out: every name a
    present merged file replaced (its rows are in that file), and a merged file gone since the listing
    (only a newer merged file, listed too, ever replaces one)."""
    hidden: set[str] = set()
    for name in names:
        if not is_merged_name(name):
            continue
        record = read_record(filesystem, f"{partition}/{name}")
        if record is None:
            hidden.add(name)
        else:
            hidden.update(record.names())
    return hidden


def locate(filesystem: pafs.FileSystem, path: str) -> Located | None:
    """Where the rows of the data file ``path`` are now that it is gone: a row range of the merged file
    of its partition that replaced it (directly or through merged files merged again); None when no
    merged file names it. A newer merged file exists before an older one is deleted, so one listing
    finds whichever holds the rows."""
    partition, _, name = path.rpartition("/")
    infos = filesystem.get_file_info(pafs.FileSelector(partition, allow_not_found=True))
    for info in infos:
        if info.type != pafs.FileType.File or not is_merged_name(info.base_name):
            continue
        record = read_record(filesystem, info.path)
        found = _find(record.sources, name, 0) if record is not None else None
        if found is not None:
            return Located(info.path, *found)
    return None


def _find(sources: tuple[Replaced, ...], name: str, offset: int) -> tuple[int, int] | None:
    for source in sources:
        if source.name == name:
            return offset, source.rows
        found = _find(source.sources, name, offset)
        if found is not None:
            return found
        offset += source.rows
    return None


def _names(sources: tuple[Replaced, ...]) -> Iterator[str]:
    for source in sources:
        yield source.name
        yield from _names(source.sources)


def _encode(sources: tuple[Replaced, ...]) -> list[object]:
    # [name, rows] or [name, rows, [its sources]]: the footer of a day's merge names ~86,400 files.
    return [[s.name, s.rows, _encode(s.sources)] if s.sources else [s.name, s.rows] for s in sources]


def _decode(items: list[Any]) -> tuple[Replaced, ...]:
    return tuple(
        Replaced(str(item[0]), int(item[1]), _decode(item[2]) if len(item) > 2 else ()) for item in items
    )
