"""The dataset hash of equal tables is equal whichever path built them: in memory with arbitrary bytes
under the nulls (as numpy masks, Arrow kernels and structs built from Python leave them), after a
Parquet round trip, and rebuilt from Python lists (hypothesis, every column type a training set may
hold). And for tables whose null slots already held zeros, it is the hash recorded before the canonical
form: existing lineage records stay valid."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.offline.canonical_arrays import canonical_array, canonical_type
from control_plane.offline.datasets import CANONICAL_BATCH_ROWS, content_hash, hashes_to


@dataclass(frozen=True)
class Kind:
    """A column type and a strategy for its non-null values."""

    arrow_type: pa.DataType
    values: st.SearchStrategy[Any]


texts = st.text(max_size=6)
ints = st.integers(-(2**63), 2**63 - 1)
KINDS = {
    "int64": Kind(pa.int64(), ints),
    "int8": Kind(pa.int8(), st.integers(-128, 127)),
    "uint16": Kind(pa.uint16(), st.integers(0, 2**16 - 1)),
    "float64": Kind(pa.float64(), st.floats(allow_nan=False)),
    "float32": Kind(pa.float32(), st.floats(allow_nan=False, width=32)),
    "bool": Kind(pa.bool_(), st.booleans()),
    "string": Kind(pa.string(), texts),
    "large_string": Kind(pa.large_string(), texts),
    "binary": Kind(pa.binary(), st.binary(max_size=6)),
    "timestamp": Kind(pa.timestamp("us", tz="UTC"), st.integers(0, 2**50)),
    "date": Kind(pa.date32(), st.integers(-(10**5), 10**5)),
    "decimal": Kind(
        pa.decimal128(10, 2), st.decimals(-(10**7), 10**7, places=2, allow_nan=False, allow_infinity=False)
    ),
    "list": Kind(pa.list_(pa.int64()), st.lists(st.one_of(st.none(), ints), max_size=3)),
    "list_of_strings": Kind(pa.list_(pa.string()), st.lists(st.one_of(st.none(), texts), max_size=3)),
    "fixed_list": Kind(pa.list_(pa.int64(), 2), st.lists(st.one_of(st.none(), ints), min_size=2, max_size=2)),
    "struct": Kind(
        pa.struct([("a", pa.int64()), ("b", pa.string()), ("c", pa.bool_())]),
        st.fixed_dictionaries(
            {
                "a": st.one_of(st.none(), ints),
                "b": st.one_of(st.none(), texts),
                "c": st.one_of(st.none(), st.booleans()),
            }
        ),
    ),
    "map": Kind(
        pa.map_(pa.string(), pa.int64()), st.lists(st.tuples(texts, st.one_of(st.none(), ints)), max_size=3)
    ),
    "dictionary": Kind(pa.dictionary(pa.int32(), pa.string()), texts),
}

# Types a Parquet round trip gives back as others (canonical_arrays.parquet_type), nested ones included.
seconds = st.integers(-(2**35), 2**35)  # within the years Python can show
times = st.integers(0, 86_399)
PARQUET_CHANGES = {
    "timestamp_s": Kind(pa.timestamp("s", tz="UTC"), seconds),
    "naive_timestamp_s": Kind(pa.timestamp("s"), seconds),
    "date64": Kind(pa.date64(), st.integers(-(10**5), 10**5).map(lambda days: days * 86_400_000)),
    "time32_s": Kind(pa.time32("s"), times),
    "dictionary_of_ints": Kind(pa.dictionary(pa.int32(), pa.int64()), ints),
    "dictionary_of_large_strings": Kind(pa.dictionary(pa.int8(), pa.large_string()), texts),
    "list_of_timestamp_s": Kind(
        pa.list_(pa.timestamp("s")), st.lists(st.one_of(st.none(), seconds), max_size=3)
    ),
    "struct_of_date64_and_time32_s": Kind(
        pa.struct([("d", pa.date64()), ("t", pa.time32("s"))]),
        st.fixed_dictionaries(
            {"d": st.one_of(st.none(), st.integers(0, 10**4).map(lambda days: days * 86_400_000)), "t": times}
        ),
    ),
    "map_to_time32_s": Kind(
        pa.map_(pa.string(), pa.time32("s")),
        st.lists(st.tuples(texts, st.one_of(st.none(), times)), max_size=3),
    ),
}
ALL_KINDS = {**KINDS, **PARQUET_CHANGES}

# Per row: null or not, and a value (under a null it is what the slot's bytes still hold).
Rows = list[tuple[bool, Any]]


def bitmap(valid: list[bool]) -> pa.Buffer:
    """A validity bitmap whose bits past the end are set: Arrow leaves them unspecified."""
    bits = np.packbits(np.array(valid, dtype=bool), bitorder="little")
    if len(valid) % 8:
        bits[-1] |= np.uint8(0xFF << (len(valid) % 8) & 0xFF)
    return pa.py_buffer(bits.tobytes())


def own_buffers(array: pa.Array) -> int:
    """How many of ``array.buffers()`` are its own (validity included), not its children's."""
    t = array.type
    if pa.types.is_struct(t) or pa.types.is_fixed_size_list(t):
        return 1
    if pa.types.is_list(t) or pa.types.is_map(t) or pa.types.is_large_list(t):
        return 2
    is_binary = pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
    return 3 if is_binary else 2


def children(array: pa.Array) -> list[pa.Array] | None:
    if pa.types.is_struct(array.type):
        return [array.field(i) for i in range(array.type.num_fields)]
    if array.type.num_fields:
        return [array.values]
    return None


def dirty_column(kind: Kind, rows: Rows, lead: int) -> pa.Array:
    """The column with each null slot still holding its value's bytes (a struct's children and a list's
    elements included) and a bitmap with stray bits past the end. The first ``lead`` rows are to be
    sliced off."""
    valid = [not null for null, _ in rows]
    if pa.types.is_dictionary(kind.arrow_type):
        # The dictionary of the valid values kept, in order of appearance (what the other paths build;
        # the sliced-off rows are null, so that it needs no entry of theirs); a null's index still
        # points at some entry.
        valid[:lead] = [False] * lead
        entries = list(dict.fromkeys(v for (_, v), ok in zip(rows, valid, strict=True) if ok))
        codes = [entries.index(v) if v in entries else len(str(v)) % max(1, len(entries)) for _, v in rows]
        index_type = kind.arrow_type.index_type
        full = pa.array(codes, index_type)
        nulls = valid.count(False)
        indices = pa.Array.from_buffers(index_type, len(rows), [bitmap(valid), full.buffers()[1]], nulls)
        return pa.DictionaryArray.from_arrays(indices, pa.array(entries, kind.arrow_type.value_type))
    full = pa.array([value for _, value in rows], kind.arrow_type)
    buffers = [bitmap(valid), *full.buffers()[1 : own_buffers(full)]]
    return pa.Array.from_buffers(full.type, len(full), buffers, valid.count(False), children=children(full))


def parquet_round_trip(table: pa.Table) -> pa.Table:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    sink.seek(0)
    return pq.read_table(sink)


def from_lists(table: pa.Table) -> pa.Table:
    return pa.table(
        {
            name: pa.array(table.column(name).to_pylist(), table.column(name).type)
            for name in table.column_names
        }
    )


@st.composite
def tables(draw: Callable[..., Any], kinds: list[str] | None = None) -> pa.Table:
    """A table of 1-4 columns of random kinds, nulls anywhere, an offset into its buffers and chunks."""
    names = draw(st.lists(st.sampled_from(kinds or sorted(KINDS)), min_size=1, max_size=4))
    lead = draw(st.integers(0, 3))
    n = draw(st.integers(0, 20))
    columns = {}
    for index, name in enumerate(names):
        kind = ALL_KINDS[name]
        rows = draw(st.lists(st.tuples(st.booleans(), kind.values), min_size=lead + n, max_size=lead + n))
        columns[f"{name}_{index}"] = dirty_column(kind, rows, lead)
    table = pa.table(columns).slice(lead)
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
    pieces = [table.slice(lo, hi - lo) for lo, hi in zip([0, *cuts], [*cuts, n], strict=True)]
    return pa.concat_tables(pieces)


@settings(max_examples=400, deadline=None)
@given(table=tables())
def test_equal_tables_hash_equally_from_memory_parquet_and_python_lists(table: pa.Table) -> None:
    read_back = parquet_round_trip(table)
    rebuilt = from_lists(table)
    assert read_back.equals(table) and rebuilt.equals(table)  # the same table three ways
    assert content_hash(table) == content_hash(read_back) == content_hash(rebuilt)


@settings(max_examples=300, deadline=None)
@given(table=tables(sorted(PARQUET_CHANGES)))
def test_types_a_parquet_round_trip_changes_hash_as_their_parquet_copy(table: pa.Table) -> None:
    """Entity rows with labels in whole seconds (or dates as date64, ...) made a training set whose own
    Parquet copy hashed differently: reading it back by hash was DATA_LOSS."""
    read_back = parquet_round_trip(table)
    assert read_back.to_pylist() == table.to_pylist()  # the same values, in the types Parquet gives back
    assert content_hash(read_back) == content_hash(table) == content_hash(parquet_round_trip(read_back))


@settings(max_examples=200, deadline=None)
@given(table=tables(sorted(ALL_KINDS)))
def test_the_canonical_form_holds_the_same_values(table: pa.Table) -> None:
    for column in table.columns:
        canonical = canonical_array(column.combine_chunks())
        canonical.validate(full=True)
        assert canonical.to_pylist() == column.to_pylist()


def hash_before_the_canonical_form(table: pa.Table) -> str:
    """``content_hash`` as it was before: metadata removed and chunks combined, bytes as they were."""
    schema = pa.schema([field.remove_metadata() for field in table.schema])
    combined = pa.Table.from_arrays(list(table.combine_chunks().columns), schema=schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, combined.schema) as writer:
        writer.write_table(combined, max_chunksize=CANONICAL_BATCH_ROWS)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


# Built from Python lists, every kind but a struct already held the canonical bytes (a struct's children
# were valid under a null row).
UNCHANGED = sorted(set(KINDS) - {"struct"})


@settings(max_examples=200, deadline=None)
@given(table=tables(UNCHANGED))
def test_tables_built_from_python_lists_keep_the_hash_recorded_before(table: pa.Table) -> None:
    clean = from_lists(table)
    assert content_hash(clean) == hash_before_the_canonical_form(clean)


def test_the_reviewers_case_and_what_a_parquet_copy_of_a_masked_column_hashes_to() -> None:
    masked = pa.table(
        {"driver_id": pa.array([1, 2]), "label": pa.array(np.array([0.5, 7.0]), mask=np.array([False, True]))}
    )
    listed = pa.table({"driver_id": [1, 2], "label": [0.5, None]})
    assert content_hash(masked) == content_hash(parquet_round_trip(masked)) == content_hash(listed)
    # The Parquet copy and the list-built table hash as they did before: only the masked one changed.
    assert content_hash(listed) == hash_before_the_canonical_form(parquet_round_trip(masked))
    assert content_hash(masked) != hash_before_the_canonical_form(masked)
    assert content_hash(pa.table({"x": [Decimal("1.5"), None]})) == content_hash(
        parquet_round_trip(pa.table({"x": [Decimal("1.5"), None]}))
    )


def not_nullable(table: pa.Table, flags: list[bool]) -> pa.Table:
    """``table`` with the columns whose flag is set (and that hold no null) declared not nullable."""
    fields = [
        field.with_nullable(not (flag and column.null_count == 0))
        for field, column, flag in zip(table.schema, table.columns, flags, strict=True)
    ]
    return pa.Table.from_arrays(table.columns, schema=pa.schema(fields))


@settings(max_examples=200, deadline=None)
@given(table=tables(), data=st.data())
def test_a_nullable_flag_is_not_part_of_the_hash(table: pa.Table, data: st.DataObject) -> None:
    """The same values hash the same whether a column is declared nullable or not: entity rows from a
    source with NOT NULL columns (a database, Spark, a Parquet file of required columns) and the same rows
    from pandas are one dataset. The Parquet copy keeps the flag, and hashes the same."""
    flags = data.draw(st.lists(st.booleans(), min_size=table.num_columns, max_size=table.num_columns))
    declared = not_nullable(table, flags)
    copy = parquet_round_trip(declared)
    assert [f.nullable for f in copy.schema] == [f.nullable for f in declared.schema]
    assert content_hash(declared) == content_hash(table) == content_hash(copy)


# Tables with fields declared not nullable, top-level and nested, and the hashes recorded for them while
# the hash covered the flags (computed by the code of then): their copies must still read back.
NOT_NULL_ID = pa.field("id", pa.int64(), nullable=False)
FLAT = pa.table(
    [pa.array([1, 2, 3]), pa.array([0.5, None, 2.0])],
    schema=pa.schema([NOT_NULL_ID, ("label", pa.float64())]),
)
NESTED = pa.table(
    [
        pa.array([[1], [2, 3], None], pa.list_(pa.field("item", pa.int64(), nullable=False))),
        pa.array([{"a": 1}, None, {"a": 3}], pa.struct([pa.field("a", pa.int64(), nullable=False)])),
        pa.array([[("k", 1)], None, []], pa.map_(pa.string(), pa.field("value", pa.int64(), nullable=False))),
    ],
    names=["tags", "point", "counts"],
)


def not_null(data_type: pa.DataType, name: str = "item") -> pa.Field:
    return pa.field(name, data_type, nullable=False)


EVENT = pa.struct([not_null(pa.int64(), "a"), ("b", pa.string())])
MORE = pa.table(  # sliced: the columns start at an offset
    [
        pa.array([[1, 2], None, [3], [4, 5]], pa.large_list(not_null(pa.int64()))),
        pa.array([[1, 2], [3, 4], None, [7, 8]], pa.list_(not_null(pa.int32()), 2)),
        pa.array([[{"a": 1, "b": "x"}], [None], None, []], pa.list_(EVENT)),
        pa.array(["u", "v", None, "u"]).dictionary_encode(),
        pa.array([1.5, 2.5, 3.5, 4.5]),
    ],
    schema=pa.schema(
        [
            ("big", pa.large_list(not_null(pa.int64()))),
            ("pair", pa.list_(not_null(pa.int32()), 2)),
            ("events", pa.list_(EVENT)),
            ("city", pa.dictionary(pa.int32(), pa.string())),
            not_null(pa.float64(), "w"),
        ]
    ),
).slice(1)
RECORDED_WITH_THE_FLAGS = {
    "flat": (FLAT, "f34bc824bb23bfdf0025ef37869a3a65e420d2e78a82ceb8dea6d5af8ce1dec5"),
    "nested": (NESTED, "8abaace7eec82665e4fe83625d619a27bdeb316a99bdb055eb32297e657b19c3"),
    "more": (MORE, "f04b21f8e567686560779268698743a09e714a6e07b2249e5003e13a9960fa3f"),
}


def nested_flags(field: pa.Field) -> list[bool]:
    """The nullable flags of ``field`` and the fields in it, but a map's key and entries (never null)."""
    t = field.type
    if pa.types.is_map(t):
        return [field.nullable, *nested_flags(t.item_field)]
    return [field.nullable, *(f for i in range(t.num_fields) for f in nested_flags(t.field(i)))]


@pytest.mark.parametrize("case", sorted(RECORDED_WITH_THE_FLAGS))
def test_nested_flags_are_not_hashed_and_a_hash_recorded_with_the_flags_still_matches(case: str) -> None:
    table, recorded = RECORDED_WITH_THE_FLAGS[case]
    # The same values with every field nullable (canonical_type: nullable fields, default child names).
    nullable = pa.table(
        [column.cast(canonical_type(column.type)) for column in table.columns], names=table.column_names
    )
    assert all(all(nested_flags(field)) for field in nullable.schema)
    assert content_hash(table) == content_hash(nullable) != recorded
    copy = parquet_round_trip(table)
    assert copy.schema.equals(table.schema)  # the copy keeps the flags
    assert hashes_to(table, recorded) and hashes_to(copy, recorded)
    assert hashes_to(copy, content_hash(table))
    assert not hashes_to(nullable, recorded)  # the flags were hashed: a nullable table never had that hash
    assert not hashes_to(copy, "0" * 64)
