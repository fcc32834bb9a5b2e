"""Record-level validation of ingested data against a feature view's registered schema.

``validate(view, entity, table, now=...)`` splits a batch into the records that pass every rule
(``accepted``, cast to the registered types) and those that fail (``rejected``: row index, the original
row as JSON and every reason, ``; ``-separated). Invariant: ``accepted.num_rows + rejected.num_rows ==
table.num_rows``. With ``strict=True`` it raises ``InvalidArgument`` naming the first offending rows and
columns instead (the batch API's strict mode).

Rules, each naming the column in its reason (``temperature_c: 75.2 above max 60``):

* **join keys**: every join key of the entity must be present, non-null (NaN counts as null) and castable
  without loss to its registered type (int64 or string; never from a timestamp, date, time or duration,
  whose number or text depends on its unit). An int64 key takes a whole number in range, as text too
  (``"1.0"``), never a bool; a string key takes text or an integer (a decimal of scale 0 too), never a
  float, a decimal of another scale or a bool, whose text depends on how it is written
  (``column_checks.not_a_text_key``; a Kafka source flags a JSON float or bool there the same way), so a
  batch and a stream name one entity for one value;
* **key length**: a string join key of more than ``max_key_bytes`` bytes of UTF-8 (default 1,024,
  ``AETHER_MAX_JOIN_KEY_BYTES``) is rejected (``key_length.py``): it would be a Redis key and a value of
  every offline row of its entity;
* **timestamp**: the view's ``source.timestamp_field`` (default ``event_ts``) must be present,
  time-zone-aware (an Arrow timestamp with a zone or an ISO 8601 string with an offset; never an epoch
  number or a date), not more than ``max_future`` (default 1 day) ahead of ``now``, and within years 1
  to 9999 in UTC (the offline store's date partitions can name no other, and ``0000-06-01T00:00:00Z``
  is valid ISO 8601);
* **dtype**: each value castable without loss to its feature's type (see ``casting.py``);
* **range / categories**: ``min_value`` <= v <= ``max_value``; v in ``allowed_values`` when listed. An
  aggregated event field is also held to the rules that keep the aggregates made from it within their
  features' rules (``control_plane/features/aggregated_rules.py``: a mean's ``min: 0`` is ``min: 0`` on
  each event), each reason naming the feature (``fare: -5 below min 0 (the rule of feature
  'mean_fare_1h', the mean of 'fare' over 1h)``), so a window the retraining check would refuse is never
  built;
* **finite** (aggregated event fields only, see below): ``inf`` and ``-inf`` are rejected ("amount: inf
  is not finite"). One infinity would poison every sum, mean, min or max window holding it for the
  window's whole length (``inf + -inf`` is NaN, written as a missing value). A plain feature's float
  keeps accepting an infinity given as one (``inf``, ``-Infinity``, an Arrow infinity): it is a valid
  IEEE value a producer may mean (e.g. "never"), it touches only its own row, and a ``min_value`` /
  ``max_value`` rule rejects it where it is not wanted. A *finite* literal too large for the type
  (``"1e309"``) is no infinity the sender wrote: it fails the dtype rule for every float column;
* **nulls** (NaN counts as null): with ``max_null_fraction`` 0 every null is rejected ("null (NaN or
  missing) not allowed"), a rule of each record. Above 0 the rule is the batch's: per feature, the
  batch's null fraction is ``nulls / records``; when it exceeds ``max_null_fraction``, *every* null
  record of that feature is rejected ("null fraction 0.40 in batch exceeds max 0.10"); at or below it,
  nulls are accepted. A missing feature column counts as all null. The fraction is the table's own
  unless ``null_fractions`` gives it. The batch is:

  - an IngestBatch call: its chunks (the SDK's transport pieces of one table) are each judged by the
    fraction over all of the call's tables (``null_fractions()``);
  - a Parquet ``Materialize``: each chunk it reads (65,536 rows, ``parquet_source.PARQUET_BATCH_ROWS``);
  - a stream: each read batch;
  - none for a replay, which passes ``judged_alone`` (0 for every column): a replayed record is judged
    alone, by its per-record rules. Its own batch judged its null fraction already; judged as a batch of
    its own, a record with a null its rule allowed had a fraction of 1.0 and could never be replayed. So
    replaying a record quarantined for its batch's null fraction accepts its null;

* **unknown columns**: a record with a non-null value in a column the schema does not know is rejected
  (a stream message's fields are its own, so an unknown field rejects just that message); NaN counts as
  null there too, so a pandas frame's extra all-NaN float column rejects nothing.

The accepted table has the join keys (registered order), ``event_ts`` (timestamp[us, UTC]) and one column
per value column. For a plain view the value columns are its features; for a view with ``aggregations``
(a streaming view) the records are raw events, and the value columns are the aggregated event fields
(float64, required, finite: no NaN, no infinity; an integer, int32 or int64 within 2**53, when a sum,
min, max or last stores it into an integer feature; a field that is only counted must be present but may
be of any type, kept as a string); the features are the aggregates computed from them. Batch ingestion
refuses streaming views (their events go to the stream), and a replayed quarantined event is validated
here like a streamed one, so every path into the windows applies the same rule. With ``stored=True`` the
records are checked as the offline store holds them: a streaming view's stored rows are its aggregates,
so its value columns are then its features, as for a plain view.

This module is the schema of a record and ``validate``'s entry points; each column's checks are in
``column_checks`` (the range and category comparisons in ``range_rules``), and the reasons, the rejected
table and the strict-mode message in ``rejections``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2
from clients.errors import InvalidArgument
from clients.join_key_limit import DEFAULT_MAX_JOIN_KEY_BYTES
from control_plane.features.aggregated_rules import input_rules
from control_plane.ingestion.casting import TIMESTAMP_TYPE, decode_run_ends
from control_plane.ingestion.column_checks import (
    ValueColumn,
    cast_values,
    check_required,
    check_timestamp,
    check_values,
    column_values,
    where_present,
)
from control_plane.ingestion.key_length import check_key_length
from control_plane.ingestion.rejections import Reasons, rejected_table, strict_message

DEFAULT_TIMESTAMP_FIELD = "event_ts"
DEFAULT_MAX_FUTURE = timedelta(days=1)

_ARROW_TYPES: dict[int, pa.DataType] = {
    types_pb2.FLOAT32: pa.float32(),
    types_pb2.FLOAT64: pa.float64(),
    types_pb2.INT32: pa.int32(),
    types_pb2.INT64: pa.int64(),
    types_pb2.BOOL: pa.bool_(),
    types_pb2.STRING: pa.string(),
}


@dataclass(frozen=True)
class ValidationResult:
    accepted: pa.Table
    rejected: pa.Table  # rejections.REJECTED_SCHEMA: row_index, payload (original row as JSON), reason


def arrow_type(value_type: int) -> pa.DataType:
    return _ARROW_TYPES[value_type]


def timestamp_field(view: pb.FeatureView) -> str:
    return view.spec.source.timestamp_field or DEFAULT_TIMESTAMP_FIELD


def value_columns(view: pb.FeatureView, *, stored: bool = False) -> list[ValueColumn]:
    """The value columns a record of ``view`` carries: as ingested, or with ``stored`` as the offline
    store holds it (see the module docstring)."""
    if view.spec.aggregations and not stored:
        aggregations = view.spec.aggregations
        names = sorted({aggregation.column for aggregation in aggregations})
        # A field that is only counted is never read as a number: any type will do (ids like "b0").
        read = {aggregation.column for aggregation in aggregations if aggregation.function != "count"}
        integral = _integral_fields(view)
        derived = input_rules(view.spec)
        return [
            replace(
                integral.get(name)
                or ValueColumn(
                    name,
                    pa.float64() if name in read else pa.string(),
                    pb.ValidationRule(max_null_fraction=0.0),
                    finite=name in read,
                ),
                derived=tuple(rule for rule in derived if rule.field == name),
            )
            for name in names
        ]
    return [ValueColumn(f.name, arrow_type(f.value_type), f.validation) for f in view.spec.features]


def _integral_fields(view: pb.FeatureView) -> dict[str, ValueColumn]:
    """The event fields a sum, min, max or last stores into an integer feature: they must be integers
    that fit the narrowest such feature (and, for int64, that float64, the window kernel's type, holds
    exactly: |v| <= 2**53), else the stored result would be truncated or wrap around."""
    types = {feature.name: feature.value_type for feature in view.spec.features}
    narrowest: dict[str, int] = {}
    for aggregation in view.spec.aggregations:
        value_type = types.get(aggregation.output, types_pb2.VALUE_TYPE_UNSPECIFIED)
        reads_value = aggregation.function in ("sum", "min", "max", "last")
        if (
            reads_value
            and value_type in _INTEGER_FEATURES
            and narrowest.get(aggregation.column) != types_pb2.INT32
        ):
            narrowest[aggregation.column] = value_type
    exact = pb.ValidationRule(max_null_fraction=0.0, min_value=-(2.0**53), max_value=2.0**53)
    return {
        name: ValueColumn(name, pa.int32(), pb.ValidationRule(max_null_fraction=0.0))
        if value_type == types_pb2.INT32
        else ValueColumn(name, pa.int64(), exact)
        for name, value_type in narrowest.items()
    }


_INTEGER_FEATURES = (types_pb2.INT32, types_pb2.INT64)


def _own_value_columns(view: pb.FeatureView, entity: pb.Entity, stored: bool) -> list[ValueColumn]:
    """``value_columns`` less an event field that is a join key or the timestamp field (only a count
    may aggregate one, the registry checks): the record's key or timestamp is that field, checked as
    one, and a second column of the same name broke the accepted table."""
    if not view.spec.aggregations or stored:
        return value_columns(view, stored=stored)
    taken = {key.name for key in entity.join_keys} | {timestamp_field(view)}
    return [column for column in value_columns(view) if column.name not in taken]


def accepted_schema(view: pb.FeatureView, entity: pb.Entity, *, stored: bool = False) -> pa.Schema:
    keys = [(key.name, arrow_type(key.value_type)) for key in entity.join_keys]
    values = [(column.name, column.arrow_type) for column in _own_value_columns(view, entity, stored)]
    return pa.schema([*keys, ("event_ts", TIMESTAMP_TYPE), *values])


def validate(
    view: pb.FeatureView,
    entity: pb.Entity,
    table: pa.Table,
    *,
    now: datetime,
    max_future: timedelta = DEFAULT_MAX_FUTURE,
    strict: bool = False,
    stored: bool = False,
    rejected_before: Mapping[int, Sequence[str]] | None = None,
    null_fractions: Mapping[str, float] | None = None,
    max_key_bytes: int | None = DEFAULT_MAX_JOIN_KEY_BYTES,
) -> ValidationResult:
    """Splits ``table`` into accepted and rejected records (see the module docstring for the rules).
    ``rejected_before``: reasons, by row, found before the table was built (a stream field that is not
    valid UTF-8); those rows are rejected with them, first, and with any the rules add.
    ``null_fractions``: by value column, the null fraction its ``max_null_fraction`` judges instead of
    the table's own (a column it does not name: the table's own); ``judged_alone`` for records judged
    one by one. ``max_key_bytes``: the longest string join key, in bytes of UTF-8 (``key_length``; None:
    no limit, for rows stored before under the limit of their day)."""
    if now.tzinfo is None:
        raise ValueError("now must be time-zone-aware")
    refuse_repeated_columns(table)
    n = table.num_rows
    table = decode_run_ends(table).combine_chunks()
    reasons = Reasons()
    for row, found in (rejected_before or {}).items():
        reasons.by_row[row].extend(found)
    columns: dict[str, pa.Array] = {}
    ts_name = timestamp_field(view)
    known = {key.name for key in entity.join_keys} | {ts_name}

    for key in entity.join_keys:
        columns[key.name] = check_required(table, key.name, arrow_type(key.value_type), "join key", reasons)
        check_key_length(key.name, columns[key.name], max_key_bytes, reasons)
    columns["event_ts"] = check_timestamp(table, ts_name, now, max_future, reasons)
    for column in _own_value_columns(view, entity, stored):
        known.add(column.name)
        fraction = None if null_fractions is None else null_fractions.get(column.name)
        columns[column.name] = check_values(table, column, reasons, fraction)
    for name in table.column_names:
        if name not in known:
            present = where_present(column_values(table, name))
            reasons.add(present, lambda _row, name=name: f"{name}: unknown column")

    bad = np.zeros(n, dtype=bool)
    bad[list(reasons.by_row)] = True
    if strict and bad.any():
        raise InvalidArgument(strict_message(reasons, n))
    schema = accepted_schema(view, entity, stored=stored)
    accepted = pa.Table.from_arrays([columns[field.name] for field in schema], schema=schema)
    if bad.any():
        accepted = accepted.filter(pa.array(~bad))
    return ValidationResult(accepted, rejected_table(table, reasons))


def text_columns(view: pb.FeatureView, entity: pb.Entity, *, stored: bool = False) -> set[str]:
    """The columns of a record the version registers as strings (string join keys, event fields that
    are only counted): where a replayed payload's ``"NaN"`` is the string it was (``records_table``)."""
    schema = accepted_schema(view, entity, stored=stored)
    return {field.name for field in schema if pa.types.is_string(field.type)}


def null_fractions(
    view: pb.FeatureView, entity: pb.Entity, tables: Iterable[pa.Table], *, stored: bool = False
) -> dict[str, float]:
    """By value column, its null fraction over all of ``tables`` (one call's, each validated on its own):
    ``validate``'s ``null_fractions`` for them. Nulls are counted as ``validate`` counts them: NaN is
    null, a missing column all null, and a value that fails its cast is no null (its record is rejected
    for the cast)."""
    columns = _own_value_columns(view, entity, stored)
    records = 0
    nulls = dict.fromkeys((column.name for column in columns), 0)
    for table in tables:
        refuse_repeated_columns(table)
        table = decode_run_ends(table)
        records += table.num_rows
        for column in columns:
            _source, cast, failed = cast_values(table, column)
            nulls[column.name] += int((~cast.is_valid().to_numpy(zero_copy_only=False) & ~failed).sum())
    return {name: count / records if records else 0.0 for name, count in nulls.items()}


def judged_alone(view: pb.FeatureView, entity: pb.Entity, *, stored: bool = False) -> dict[str, float]:
    """``validate``'s ``null_fractions`` for records each judged alone (a replay): a null fraction of 0
    for every value column, so no batch's fraction rejects a null; ``max_null_fraction`` 0 still does."""
    return {column.name: 0.0 for column in _own_value_columns(view, entity, stored)}


def refuse_repeated_columns(table: pa.Table) -> None:
    """Which of two same-named columns holds a record's value is undecidable (and Arrow's lookup by name
    raised KeyError, an INTERNAL error): the whole table is refused, naming them. Run before anything
    looks a column up by name (the batch window's timestamp lookup, too)."""
    names = table.column_names
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise InvalidArgument(
            f"columns {', '.join(map(repr, twice))} appear more than once in the table; name each column once"
        )
