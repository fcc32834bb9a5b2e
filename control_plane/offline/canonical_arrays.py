"""Arrow arrays in one canonical physical form, so that equal arrays serialize to equal bytes (the
dataset hash, ``datasets.content_hash``, is a hash of the serialization).

Arrow leaves open what lies under a null slot and in the unused bits of a bitmap, and each path that
builds an array chooses differently: a float column built from numpy with a mask keeps the old value
under a null, a Parquet round trip writes 0 there (and, for a boolean, sometimes a 1 bit); a struct built
from Python lists marks the children of a null row valid, Parquet marks them null; a Parquet round trip
renames a list's child field ``item`` to ``element``. The canonical form fixes every such choice:

* validity: no bitmap when nothing is null, else a fresh bitmap whose bits past the end are 0;
* fixed-width values (numbers, booleans, timestamps, dates, times, durations, decimals, intervals,
  fixed-size binaries): zero bytes (false bits) under every null, and past the end of a boolean's last
  byte;
* strings and binaries: an empty value under every null; offsets start at 0;
* lists and maps: an empty list under every null, so the child holds the elements of valid rows only;
* structs and fixed-size lists: their children are null wherever the parent row is null;
* dictionaries: canonical indices and dictionary values (a dictionary is not re-encoded: which values
  it holds, in which order, is part of the array);
* types: a list's or map's child fields have Arrow's default names (``item``; ``entries``, ``key``,
  ``value``) and no metadata; struct field names are data and stay; every child field is nullable but
  a map's key (Arrow requires it not to be): a non-nullable flag only promises what the values show;
* types a Parquet round trip changes are those it gives back (:func:`parquet_type`: ``timestamp[s]`` is
  ``timestamp[ms]``, ``date64`` is ``date32``, ``time32[s]`` is ``time32[ms]``, a dictionary of other
  than strings or binaries is its values, of large strings or binaries a dictionary of strings or
  binaries), anywhere in a nested type: a training set and its Parquet copy hash equally.

* view layouts (``string_view``, ``binary_view``, ``list_view``, as Polars exports strings) are their
  offsets layouts (``string``, ``binary``, ``list``): a view's bytes depend on where its values lie, so a
  table and its Parquet copy hashed differently.
Every other layout (null, union, run-end encoded and extension types) is kept as it is.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa

Mask = npt.NDArray[np.bool_]


def parquet_type(data_type: pa.DataType) -> pa.DataType:
    """The type pyarrow gives back a column of ``data_type`` written to Parquet and read again (with the
    Arrow schema it stores, as ``pq.write_table`` does by default). A column in any of these types,
    say entity rows with labels in whole seconds, made a training set whose own Parquet copy hashed
    differently: reading it back by hash was DATA_LOSS. Field names are kept."""
    if pa.types.is_timestamp(data_type) and data_type.unit == "s":
        return pa.timestamp("ms", data_type.tz)
    if pa.types.is_date64(data_type):
        return pa.date32()
    if pa.types.is_time32(data_type) and data_type.unit == "s":
        return pa.time32("ms")
    if pa.types.is_dictionary(data_type):
        values = parquet_type(data_type.value_type)
        if pa.types.is_string(values) or pa.types.is_large_string(values):
            return pa.dictionary(data_type.index_type, pa.string(), data_type.ordered)
        if pa.types.is_binary(values) or pa.types.is_large_binary(values):
            return pa.dictionary(data_type.index_type, pa.binary(), data_type.ordered)
        return values  # Parquet keeps a dictionary of strings and binaries only
    if pa.types.is_map(data_type):
        key, item = data_type.key_field, data_type.item_field
        return pa.map_(
            key.with_type(parquet_type(key.type)),
            item.with_type(parquet_type(item.type)),
            keys_sorted=data_type.keys_sorted,
        )
    if pa.types.is_fixed_size_list(data_type):
        return pa.list_(_parquet_field(data_type.value_field), data_type.list_size)
    if pa.types.is_large_list(data_type):
        return pa.large_list(_parquet_field(data_type.value_field))
    if pa.types.is_list(data_type):
        return pa.list_(_parquet_field(data_type.value_field))
    if pa.types.is_struct(data_type):
        return pa.struct([_parquet_field(data_type.field(i)) for i in range(data_type.num_fields)])
    return data_type


def _parquet_field(field: pa.Field) -> pa.Field:
    return field.with_type(parquet_type(field.type))


def canonical_type(data_type: pa.DataType, *, keep_nullability: bool = False) -> pa.DataType:
    """``data_type`` with the child field names, metadata and nullability a canonical array has (module
    doc): every child field nullable but a map's key, which Arrow requires not to be.
    ``keep_nullability`` keeps each field's own flag instead (the form hashed before; see
    ``datasets.hashes_to``)."""
    data_type = parquet_type(data_type)

    def child(field: pa.Field, name: str) -> pa.Field:
        nullable = field.nullable if keep_nullability else True
        return pa.field(name, canonical_type(field.type, keep_nullability=keep_nullability), nullable)

    if pa.types.is_string_view(data_type):
        return pa.string()
    if pa.types.is_binary_view(data_type):
        return pa.binary()
    if pa.types.is_list_view(data_type):
        return pa.list_(child(data_type.value_field, "item"))
    if pa.types.is_large_list_view(data_type):
        return pa.large_list(child(data_type.value_field, "item"))
    if pa.types.is_map(data_type):
        key = data_type.key_field
        return pa.map_(
            pa.field("key", canonical_type(key.type, keep_nullability=keep_nullability), nullable=False),
            child(data_type.item_field, "value"),
            keys_sorted=data_type.keys_sorted,
        )
    if pa.types.is_fixed_size_list(data_type):
        return pa.list_(child(data_type.value_field, "item"), data_type.list_size)
    if pa.types.is_large_list(data_type):
        return pa.large_list(child(data_type.value_field, "item"))
    if pa.types.is_list(data_type):
        return pa.list_(child(data_type.value_field, "item"))
    if pa.types.is_struct(data_type):
        fields = [data_type.field(i) for i in range(data_type.num_fields)]
        return pa.struct([child(field, field.name) for field in fields])
    if pa.types.is_dictionary(data_type):
        value_type = canonical_type(data_type.value_type, keep_nullability=keep_nullability)
        return pa.dictionary(data_type.index_type, value_type, data_type.ordered)
    return data_type


def canonical_array(array: pa.Array) -> pa.Array:
    """``array`` in the canonical form (module doc): equal to it, value for value."""
    target = parquet_type(array.type)
    if target != array.type:
        # Unsafe as Parquet's writer is: a date64 holding a time of day (Arrow says it must not) is
        # truncated to its day there too. Every other change is exact (seconds to milliseconds).
        array = array.cast(target, safe=False)
    return _canonical(_without_views(array), None)


def _without_views(array: pa.Array) -> pa.Array:
    """``array`` with every view layout (``string_view``, ``binary_view``, ``list_view``, at any depth)
    in its offsets layout (``string``, ``binary``, ``list``): the same values, in a form whose bytes
    depend on nothing but them. A view's bytes depend on where its values were put (inline or in which
    data buffer, at which offset), so a training set and its Parquet copy hashed differently."""
    if not _has_views(array.type):
        return array
    if pa.types.is_list_view(array.type) or pa.types.is_large_list_view(array.type):
        return _list_from_view(array)
    if pa.types.is_struct(array.type):
        valid = np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        children = [_without_views(array.field(i)) for i in range(array.type.num_fields)]
        names = [array.type.field(i).name for i in range(array.type.num_fields)]
        mask = pa.array(~valid) if array.null_count else None
        return pa.StructArray.from_arrays(children, names=names, mask=mask)
    # string and binary views, and views nested in lists, maps and dictionaries: Arrow's cast is exact.
    return array.cast(canonical_type(array.type))


def _has_views(data_type: pa.DataType) -> bool:
    """Whether ``data_type`` is or holds a view layout."""
    return any(
        check(t)
        for t in _nested_types(data_type)
        for check in (
            pa.types.is_string_view,
            pa.types.is_binary_view,
            pa.types.is_list_view,
            pa.types.is_large_list_view,
        )
    )


def _nested_types(data_type: pa.DataType) -> list[pa.DataType]:
    """``data_type`` and every type nested in it."""
    found = [data_type]
    if pa.types.is_dictionary(data_type):
        return found + _nested_types(data_type.value_type)
    try:
        fields = [data_type.field(i) for i in range(data_type.num_fields)]
    except (AttributeError, TypeError):
        return found
    return found + [t for field in fields for t in _nested_types(field.type)]


def _list_from_view(array: pa.Array) -> pa.Array:
    """A ``list_view`` (``large_list_view``) as a ``list`` (``large_list``) of the same rows. Arrow's own
    cast gives an invalid array when a row is null (pyarrow 26)."""
    n = len(array)
    valid = np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    starts = np.asarray(array.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    lengths = np.where(valid, np.asarray(array.sizes.to_numpy(zero_copy_only=False), dtype=np.int64), 0)
    child = _without_views(array.values.take(pa.array(_ranges(starts, lengths), pa.int64())))
    width = np.int64 if pa.types.is_large_list_view(array.type) else np.int32
    offsets = np.zeros(n + 1, dtype=width)
    np.cumsum(lengths, out=offsets[1:])
    field = array.type.value_field.with_type(child.type)
    list_type = pa.large_list(field) if width is np.int64 else pa.list_(field)
    bitmap, nulls = _validity(valid)
    return pa.Array.from_buffers(
        list_type, n, [bitmap, pa.py_buffer(offsets.tobytes())], null_count=nulls, children=[child]
    )


def _canonical(array: pa.Array, within: Mask | None) -> pa.Array:
    """``array`` canonical, and null also wherever ``within`` (its parent's validity) is False."""
    data_type = array.type
    if within is not None and within.all():
        within = None
    if within is None and array.null_count == 0 and _plain(data_type):
        return array  # nothing under a null; serialization copies exactly the array's own bytes
    n = len(array)
    if n == 0:
        return pa.array([], type=canonical_type(data_type))
    valid = _valid_mask(array)
    if within is not None:
        valid &= within
    if pa.types.is_dictionary(data_type):
        indices = _canonical(array.indices, valid)
        dictionary = _canonical(array.dictionary, None)
        return pa.DictionaryArray.from_arrays(indices, dictionary, ordered=data_type.ordered)
    if pa.types.is_boolean(data_type):
        return _boolean(array, valid)
    if _fixed_width(data_type):
        return _fixed(array, valid)
    if _binary_like(data_type):
        return _binary(array, valid)
    if pa.types.is_map(data_type) or pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        return _list(array, valid)
    if pa.types.is_fixed_size_list(data_type):
        size = data_type.list_size
        values = array.values.slice(array.offset * size, n * size)
        child = _canonical(values, np.repeat(valid, size))
        return _rebuilt(array, valid, [], [child])
    if pa.types.is_struct(data_type):
        children = [_canonical(array.field(i), valid) for i in range(data_type.num_fields)]
        return _rebuilt(array, valid, [], children)
    return array


def _valid_mask(array: pa.Array) -> Mask:
    """Which rows of ``array`` are valid (a fresh array), read from its validity bitmap where it has
    one: ``is_valid().to_numpy()`` took ten times as long."""
    data_type = array.type
    if (
        pa.types.is_union(data_type)
        or pa.types.is_run_end_encoded(data_type)
        or pa.types.is_null(data_type)
        or isinstance(data_type, pa.BaseExtensionType)
    ):  # no bitmap of their own: validity is the children's (or none at all)
        return np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    bitmap = array.buffers()[0]
    if array.null_count == 0 or bitmap is None:
        return np.ones(len(array), dtype=bool)
    first, skip = divmod(array.offset, 8)
    raw = np.frombuffer(bitmap, np.uint8)[first : first + (skip + len(array) + 7) // 8]
    return np.unpackbits(raw, bitorder="little")[skip : skip + len(array)].astype(bool)


def _plain(data_type: pa.DataType) -> bool:
    """Types whose serialization of a null-free array holds nothing but its values. Not booleans: the
    bits past the end of their last byte are serialized as they are."""
    return (_fixed_width(data_type) and not pa.types.is_boolean(data_type)) or _binary_like(data_type)


def _fixed_width(data_type: pa.DataType) -> bool:
    if pa.types.is_dictionary(data_type) or isinstance(data_type, pa.BaseExtensionType):
        return False
    try:
        return bool(data_type.bit_width > 0)
    except ValueError:  # "Non-fixed width type"
        return False


def _binary_like(data_type: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(data_type)
        or pa.types.is_binary(data_type)
        or pa.types.is_large_string(data_type)
        or pa.types.is_large_binary(data_type)
    )


def _validity(valid: Mask) -> tuple[pa.Buffer | None, int]:
    """A fresh validity bitmap (None when all valid) and the null count."""
    nulls = int(valid.size - np.count_nonzero(valid))
    return (pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None), nulls


def _rebuilt(
    array: pa.Array, valid: Mask, buffers: list[pa.Buffer], children: list[pa.Array] | None = None
) -> pa.Array:
    bitmap, nulls = _validity(valid)
    return pa.Array.from_buffers(
        canonical_type(array.type), len(array), [bitmap, *buffers], null_count=nulls, children=children
    )


def _boolean(array: pa.Array, valid: Mask) -> pa.Array:
    n, start = len(array), array.offset
    bits = np.unpackbits(np.frombuffer(array.buffers()[1], np.uint8), bitorder="little")
    values = bits[start : start + n].astype(bool) & valid
    return _rebuilt(array, valid, [pa.py_buffer(np.packbits(values, bitorder="little"))])


def _fixed(array: pa.Array, valid: Mask) -> pa.Array:
    """The values' bytes with zeros under every null. Most arrays hold zeros there already (the
    point-in-time join's feature columns, Parquet and Python-list paths): their bytes are kept, not
    copied, and only the nulls' slots are read to find out."""
    n, width = len(array), array.type.bit_width // 8
    data = array.buffers()[1].slice(array.offset * width, n * width)
    cells = np.frombuffer(data, np.uint8).reshape(n, width)
    nulls = np.flatnonzero(~valid)
    if nulls.size and cells[nulls].any():
        cells = cells.copy()
        cells[nulls] = 0
        data = pa.py_buffer(cells)
    return _rebuilt(array, valid, [data])


def _offsets(array: pa.Array, valid: Mask) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], pa.Buffer]:
    """Each row's start and (zero for a null) length in the child or data, and the canonical offsets
    buffer (of the array's offset width)."""
    n = len(array)
    large = pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type)
    large = large or pa.types.is_large_list(array.type)
    width = np.int64 if large else np.int32
    raw = np.frombuffer(array.buffers()[1], width)[array.offset : array.offset + n + 1].astype(np.int64)
    lengths = np.where(valid, np.diff(raw), 0)
    offsets = np.zeros(n + 1, dtype=width)
    np.cumsum(lengths, out=offsets[1:])
    return raw[:-1], lengths, pa.py_buffer(offsets.tobytes())


def _ranges(starts: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The positions ``starts[i] .. starts[i] + lengths[i] - 1`` of every row, concatenated."""
    ends = np.cumsum(lengths)
    return np.repeat(starts - (ends - lengths), lengths) + np.arange(int(ends[-1]) if ends.size else 0)


def _binary(array: pa.Array, valid: Mask) -> pa.Array:
    starts, lengths, offsets = _offsets(array, valid)
    data = array.buffers()[2]
    raw = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    return _rebuilt(array, valid, [offsets, pa.py_buffer(raw[_ranges(starts, lengths)].tobytes())])


def _list(array: pa.Array, valid: Mask) -> pa.Array:
    starts, lengths, offsets = _offsets(array, valid)
    elements = array.values.take(pa.array(_ranges(starts, lengths), pa.int64()))
    if pa.types.is_map(array.type):  # entries: a struct of key and value, never null, named by the type
        map_type = canonical_type(array.type)
        key, value = (_canonical(elements.field(i), None) for i in range(2))
        child = pa.StructArray.from_arrays([key, value], fields=[map_type.key_field, map_type.item_field])
    else:
        child = _canonical(elements, None)
    return _rebuilt(array, valid, [offsets], [child])
