"""Training sets as lineage: a content hash of a dataset, its record in the offline root
(``_datasets/<hash>.json``), and writing a dataset to Parquet atomically.

The hash is sha256 over a canonical serialization: the Arrow IPC stream of the table with schema and
field metadata removed, chunks combined, each column in the canonical physical form of
``canonical_arrays`` (zeros under nulls, fresh bitmaps, default names of nested child fields), re-split
into batches of :data:`CANONICAL_BATCH_ROWS` rows, no compression. Equal tables (same column names,
types, values and order) hash equally however they were chunked or whichever path built them (in
process, over gRPC, from Parquet, from Python lists).
A column of a type that a Parquet round trip changes (``timestamp[s]``, ``date64``, ``time32[s]``, a
dictionary of numbers) is hashed in the type Parquet gives back (``canonical_arrays.parquet_type``), so a
dataset and its Parquet copy hash equally; such a table's hash differs from the one recorded before, whose
copy never hashed to it (reading it back was DATA_LOSS). Likewise a column in a view layout
(``string_view``, ``binary_view``, ``list_view``: Polars' strings) is hashed as its offsets layout
(``string``, ``binary``, ``list``), whose bytes depend on the values alone.

Nullable flags are not hashed: every field is hashed as nullable (a map's key aside, which Arrow requires
not to be). A flag only declares what the values show, so the same entity rows from a source with NOT
NULL columns (a database, Spark, a Parquet file of required columns) and from pandas make one dataset,
as lineage needs. The hash covered the flags before: for a table with every field nullable (pandas,
Python lists, the join's feature columns) it is unchanged; a table with a field declared not nullable
hashes anew, so a job spec pinning its old hash gets DATA_LOSS until re-pinned, but a Parquet copy
recorded under the old hash (the copy keeps the flags) still reads back (:func:`hashes_to`).

Hashes recorded before the canonical form (lineage records, model versions, job specs pinning a hash)
are unchanged for tables that already held it: zeros under every null, as the point-in-time join writes
its feature columns and as numbers, strings and timestamps built from Python lists or read from Parquet
hold. They differ for a table that held other bytes: a column built from numpy or pandas with a mask
(the old value or NaN under the null), a nullable boolean or a list or map read from Parquet, a struct
built from Python lists. For those, running the same query now yields a new hash (a job spec pinning the
old one gets DATA_LOSS until re-pinned), and a recorded dataset is read back only if its Parquet copy
hashes to the recorded value, which such an old record may not.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from clients.errors import InvalidArgument, NotFound
from clients.files import fsync_folder
from clients.uris import redact_uri
from control_plane.offline.canonical_arrays import canonical_array, canonical_type
from control_plane.offline.roots import open_filesystem
from control_plane.offline.stale_temps import sweep_stale_objects, sweep_stale_temps
from control_plane.offline.store import DATASETS_DIR as DATASETS_DIR
from control_plane.offline.store import OfflineStore
from control_plane.offline.store_errors import store_errors
from control_plane.offline.uploads import publish_whole

CANONICAL_BATCH_ROWS = 65_536


class _HashingSink:
    """A write-only file that feeds sha256 instead of storing: hashing never holds the serialization."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.closed = False

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def canonical(table: pa.Table) -> pa.Table:
    """``table`` without schema or field metadata, every field nullable (map keys aside), one chunk per
    column, each in the canonical form."""
    schema = pa.schema([pa.field(f.name, canonical_type(f.type)) for f in table.schema])
    columns = [canonical_array(column.combine_chunks()) for column in table.columns]
    return pa.Table.from_arrays(columns, schema=schema)


def content_hash(table: pa.Table) -> str:
    """Hex sha256 of the canonical serialization of ``table`` (module doc)."""
    return _serialized_hash(canonical(table))


def hashes_to(table: pa.Table, dataset_hash: str) -> bool:
    """Whether ``table`` is the dataset ``dataset_hash`` names: it hashes to it (:func:`content_hash`),
    or, for a table with a field declared not nullable, it hashed to it while the hash still covered
    that flag (module doc), so a copy recorded then still reads back."""
    if content_hash(table) == dataset_hash:
        return True
    if not any(_declares_not_null(field) for field in table.schema):
        return False  # the hash was the same then
    current = canonical(table)
    schema = pa.schema(
        [pa.field(f.name, canonical_type(f.type, keep_nullability=True), f.nullable) for f in table.schema]
    )
    try:
        columns = [
            _with_type(column.chunk(0), field.type)
            for column, field in zip(current.columns, schema, strict=True)
        ]
    except (pa.ArrowException, ValueError):  # a layout not handled below (a union's): not recognised
        return False
    return _serialized_hash(pa.Table.from_arrays(columns, schema=schema)) == dataset_hash


def _with_type(array: pa.Array, data_type: pa.DataType) -> pa.Array:
    """The canonical ``array`` as ``data_type``, its type with other nullability flags: the same buffers.
    Not ``Array.view``, which refuses a struct's non-nullable child holding nulls under null rows (the
    canonical form puts them there)."""
    if array.type == data_type:
        return array
    if pa.types.is_dictionary(data_type):
        dictionary = _with_type(array.dictionary, data_type.value_type)
        return pa.DictionaryArray.from_arrays(array.indices, dictionary, ordered=data_type.ordered)
    if pa.types.is_struct(data_type):
        if array.offset:  # never in the canonical form: its structs are built afresh
            raise ValueError("a struct array with an offset")
        own = 1
        children = [_with_type(array.field(i), data_type.field(i).type) for i in range(data_type.num_fields)]
    elif pa.types.is_map(data_type):
        own = 2
        children = [_with_type(array.values, pa.struct([data_type.key_field, data_type.item_field]))]
    elif pa.types.is_fixed_size_list(data_type):
        own = 1
        children = [_with_type(array.values, data_type.value_type)]
    elif pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        own = 2
        children = [_with_type(array.values, data_type.value_type)]
    else:
        raise ValueError(f"no other type of {array.type} is {data_type}")
    buffers = array.buffers()[:own]
    return pa.Array.from_buffers(data_type, len(array), buffers, array.null_count, array.offset, children)


def _declares_not_null(field: pa.Field) -> bool:
    """Whether ``field`` or a field nested in it is declared not nullable (a map's key aside: Arrow's
    rule, not a declaration)."""
    if not field.nullable:
        return True
    data_type = field.type
    if pa.types.is_map(data_type):
        nested = [pa.field("key", data_type.key_type), data_type.item_field]
    elif pa.types.is_dictionary(data_type):
        nested = [pa.field("values", data_type.value_type)]
    else:
        nested = [data_type.field(i) for i in range(data_type.num_fields)]
    return any(_declares_not_null(child) for child in nested)


def _serialized_hash(table: pa.Table) -> str:
    sink = _HashingSink()
    with pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), table.schema) as writer:
        writer.write_table(table, max_chunksize=CANONICAL_BATCH_ROWS)
    return sink.digest.hexdigest()


def record_dataset(store: OfflineStore, dataset_hash: str, record: Mapping[str, Any]) -> str:
    """Writes ``_datasets/<hash>.json`` under the store's root. Returns its path.

    A dataset with this hash may already be recorded: same content, so its first record is kept (the
    creation time, the query and the files it was read from) and only a new copy is added. Before, the
    first record was kept whole, so a dataset first built without an output path (exploring, or through
    ``aetherctl historical --out``, which writes its copy on the client) could never be read back by hash,
    however many copies were written later. ``output_path`` names the newest copy and ``output_paths``
    every copy recorded, newest first: the copies hold equal content, and the older ones are the fallback
    when the newest is deleted or moved (:func:`recorded_copies`).

    Two builds of one dataset recording at once may both read the old record, and the later write wins:
    each write names its own, complete, copy, so the record always leads to one; the other copy is then
    missing from the list, never wrongly in it."""
    with store_errors(store.root, f"record dataset {dataset_hash} in {DATASETS_DIR}"):
        return _record(store, dataset_hash, record)


def _record(store: OfflineStore, dataset_hash: str, record: Mapping[str, Any]) -> str:
    folder = f"{store.base_path}/{DATASETS_DIR}"
    path = f"{folder}/{dataset_hash}.json"
    copy = record.get("output_path")
    if store.filesystem.get_file_info(path).type == pafs.FileType.File:
        existing = read_dataset_record(store, dataset_hash)
        copies = recorded_copies(existing)
        if not copy or (copies[:1] == [copy] and existing.get("output_paths") == copies):
            return path  # no new copy: the record stands
        body = {**existing, "output_path": copy, "output_paths": [copy, *(c for c in copies if c != copy)]}
    else:
        store.filesystem.create_dir(folder, recursive=True)
        body = {"dataset_hash": dataset_hash, **record, "output_paths": [copy] if copy else []}
    encoded = json.dumps(body, indent=2, sort_keys=True).encode()
    _write_atomically(store.filesystem, path, lambda sink: sink.write(encoded))
    return path


def recorded_copies(record: Mapping[str, Any]) -> list[str]:
    """The Parquet copies a dataset record names, newest first (a record written before ``output_paths``
    was kept names at most one, its ``output_path``)."""
    copies = [str(c) for c in record.get("output_paths") or () if c]
    newest = record.get("output_path")
    if newest and str(newest) not in copies:
        copies.insert(0, str(newest))
    return copies


_DATASET_HASH = re.compile(r"[0-9a-f]{64}")


def read_dataset_record(store: OfflineStore, dataset_hash: str) -> dict[str, Any]:
    """The record :func:`content_hash` ``dataset_hash`` was written with. Only a hash of the form this
    module writes names a file: a caller's text (a job spec's or a model version's dataset hash) such as
    ``../../x`` made the path, so any ``.json`` the server could read was parsed as a record."""
    if not _DATASET_HASH.fullmatch(dataset_hash):
        raise NotFound(
            f"no dataset {dataset_hash[:80]!r} recorded: a dataset hash is 64 lowercase hex digits"
        )
    path = f"{store.base_path}/{DATASETS_DIR}/{dataset_hash}.json"
    try:
        with store.filesystem.open_input_stream(path) as source:
            record: dict[str, Any] = json.loads(source.read())
    except FileNotFoundError:
        raise NotFound(f"no dataset {dataset_hash!r} recorded") from None
    return record


def write_parquet(table: pa.Table, target: str) -> str:
    """Writes ``table`` to ``target`` (a local path or a pyarrow filesystem URI) so that readers see the
    old file or the whole new one, never a part (:func:`_write_atomically`). Returns where it was
    written, as a reader opens it: a local path made absolute, or the URI given without its credentials.
    Not an object store's bare path (``bucket/key``), which was recorded and returned as where the copy
    lay: it names no store, and reading the dataset back by hash looked for a local file of that name.
    A column Parquet cannot hold (a union) is :class:`InvalidArgument` naming it
    (:func:`check_parquet_columns`): it was pyarrow's ArrowNotImplementedError, an internal error. An
    OSError is the filesystem's."""
    check_parquet_columns(table.schema)
    filesystem, path = open_filesystem(target)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        filesystem.create_dir(parent, recursive=True)
    _write_atomically(filesystem, path, lambda sink: pq.write_table(table, sink))
    return path if filesystem.type_name == "local" else redact_uri(target)


def check_parquet_columns(schema: pa.Schema) -> None:
    """Refuses (:class:`InvalidArgument`) a schema with a column Parquet cannot hold (a union, say),
    naming the first such column and its type: only an empty writer is made, so nothing is written."""
    try:
        pq.ParquetWriter(pa.BufferOutputStream(), schema).close()
        return
    except pa.ArrowException as exc:
        if isinstance(exc, OSError):
            raise
        whole = exc
    for field in schema:
        try:
            pq.ParquetWriter(pa.BufferOutputStream(), pa.schema([field])).close()
        except pa.ArrowException as exc:
            if isinstance(exc, OSError):
                raise
            raise InvalidArgument(
                f"column {field.name!r} is of type {field.type}, which Parquet cannot hold ({exc})"
            ) from exc
    raise InvalidArgument(f"the columns cannot be written as Parquet ({whole})") from whole


def utc_now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


#: The temporary name ``_write_atomically`` gives a file: ``.<name>.<uuid4 hex>.tmp``.
_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{32}\.tmp")


def sweep_stale_copies(root: str) -> int:
    """Removes the temporary files of ``output_path`` copies (``write_parquet``) that a crash left under
    the datasets ``root``, once past the offline store's age rule; returns how many. Only names of the
    exact form written here: the root also holds the callers' own files (entity rows), which a hidden
    ``.*.tmp`` of theirs may be. Under a local root, the temporary files of the copies' renames; under an
    object store's, the hidden staged objects of their uploads (:mod:`control_plane.offline.uploads`),
    found by listing the root (a start-up's one listing)."""
    if "://" not in root:
        return sweep_stale_temps(str(Path(root).expanduser().resolve()), is_temp=_is_copy_temp)
    filesystem, path = open_filesystem(root)
    if filesystem.type_name == "local":
        return 0  # a file:// root: written as a local one, but not swept (as before)
    return sweep_stale_objects(filesystem, path, recursive=True, is_temp=_is_copy_temp)


def _is_copy_temp(name: str) -> bool:
    return _TEMP_NAME.fullmatch(name) is not None


def _write_atomically(filesystem: pafs.FileSystem, path: str, write: Callable[[Any], object]) -> None:
    """Writes what ``write`` writes to the file it is given as ``path``, whole or not at all: on a local
    filesystem under a hidden temporary name next to it (``.<name>.<uuid4 hex>.tmp``), fsynced and renamed
    into place; on an object store written whole to a local temporary file, uploaded under that hidden
    name, read back and copied to ``path`` (:func:`control_plane.offline.uploads.publish_whole`). Written
    straight to ``path`` there, a write that failed part-way was published part-way by pyarrow's closing
    stream, over the previous good copy (a torn Parquet file, or an empty one)."""
    folder, name = path.rsplit("/", 1) if "/" in path else ("", path)
    hidden = f".{name}.{uuid.uuid4().hex}.tmp"
    if filesystem.type_name != "local":
        publish_whole(filesystem, path, f"{folder}/{hidden}" if folder else hidden, write)
        return
    temp = os.path.join(folder, hidden)
    try:
        with open(temp, "wb") as sink:
            write(sink)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    fsync_folder(Path(folder or "."))  # the new name survives a power cut, as the file's bytes do
