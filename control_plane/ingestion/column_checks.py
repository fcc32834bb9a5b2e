"""The checks of one column of a batch (split from ``validation``): a required column (a join key), the
timestamp, and a value column (its cast, finiteness, nulls and range rules), each adding the reasons of the
rows it fails to ``Reasons`` and returning the column cast to its registered type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from clients.aether.v1 import feature_registry_pb2 as pb
from control_plane.features.aggregated_rules import InputRule
from control_plane.ingestion.casting import (
    TIMESTAMP_SOURCES,
    TIMESTAMP_TYPE,
    bool_to_number,
    castable_to_timestamp,
    epoch_us,
    is_temporal,
    lossless_cast,
    nan_to_null,
)
from control_plane.ingestion.range_rules import check_rule, mask
from control_plane.ingestion.rejections import Reasons
from control_plane.ingestion.shown_values import show
from control_plane.offline.store import EARLIEST_EVENT_US, LATEST_EVENT_US


@dataclass(frozen=True)
class ValueColumn:
    """A column of values a record carries besides its keys and timestamp."""

    name: str
    arrow_type: pa.DataType
    rule: pb.ValidationRule
    finite: bool = False  # infinities rejected (aggregated event fields)
    # Rules that keep the aggregates of this event field within their features' rules (aggregated_rules.py).
    derived: tuple[InputRule, ...] = ()


def column_values(table: pa.Table, name: str) -> pa.Array:
    column = table.column(name)
    # combine_chunks, not concat_arrays: a table filtered down to no rows (a chunk wholly outside the
    # ingest window) has columns of no chunks, which concat_arrays refuses.
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def where_present(values: pa.Array) -> npt.NDArray[np.bool_]:
    """Where ``values`` holds a value: not null, and not NaN, which counts as null (an unknown column's
    all-NaN floats, a pandas frame's gaps, rejected every record)."""
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    present: npt.NDArray[np.bool_] = nan_to_null(values).is_valid().to_numpy(zero_copy_only=False)
    return present


def check_required(table: pa.Table, name: str, target: pa.DataType, what: str, reasons: Reasons) -> pa.Array:
    n = table.num_rows
    if name not in table.column_names:
        reasons.add(np.ones(n, dtype=bool), lambda _row: f"{name}: required {what} missing")
        return pa.nulls(n, target)
    source = column_values(table, name)
    if is_temporal(source.type):
        # A time as a key's text depends on its unit (``...12:00:00Z`` in seconds, ``...12:00:00.000000Z``
        # in microseconds): one instant sent two ways named two entities. As a number: casting.py.
        cast, failed = pa.nulls(n, target), source.is_valid().to_numpy(zero_copy_only=False)
    elif not_a_text_key(source.type, target):
        cast, failed = pa.nulls(n, target), where_present(source)
        # repr, not show: a float's Arrow text is what is ambiguous (1.0 shows as 1), and both are short.
        reasons.add(failed, lambda row: f"{name}: {source[row].as_py()!r} is a {source.type}; {TEXT_KEYS}")
        return cast
    else:
        cast, failed = lossless_cast(source, target)
    reasons.add(failed, not_castable(name, source, target))
    # Nulls are read from the cast column, not the source: lossless_cast turns NaN into null, so a NaN
    # key (pandas' float64 for an int key column with a gap) is valid in the source yet null once cast.
    missing = ~cast.is_valid().to_numpy(zero_copy_only=False) & ~failed
    reasons.add(missing, lambda _row: f"{name}: required {what} is null (NaN or missing)")
    return cast


#: Why a float, a fractional decimal or a bool is refused for a string join key (``not_a_text_key``).
TEXT_KEYS = "a string join key takes text or an integer"


def not_a_text_key(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether ``source`` is a float, a decimal of a scale other than 0 or a bool given for a string join
    key (``target``): refused. A float's text depends on how it is written (Arrow writes 1e15 as
    ``1e+15``, the integer as ``1000000000000000``; a Kafka JSON ``1.0`` is the text ``1.0``, a batch's was
    ``1``), and a decimal's carries its scale (1 is ``1.0`` in ``decimal128(2, 1)``, ``1.00`` in
    ``decimal128(3, 2)``), so one number named several entities; an integer's decimal digits are one text
    (a decimal of scale 0, a database's ``NUMERIC(20, 0)`` id, is written so too), and a bool is no key.
    Feast casts nothing at all; integers stay accepted, as producers often send numeric ids for a string
    key."""
    if pa.types.is_dictionary(source):
        source = source.value_type
    fractional = pa.types.is_decimal(source) and source.scale != 0
    return bool(
        pa.types.is_string(target)
        and (pa.types.is_floating(source) or pa.types.is_boolean(source) or fractional)
    )


def not_castable(name: str, source: pa.Array, target: pa.DataType) -> Callable[[int], str]:
    """The reason of a value of ``source`` that failed its cast to ``target``, by row."""
    if bool_to_number(source.type, target):  # a schema mistake, not a lossy value
        return lambda row: f"{name}: {show(source[row])} is a boolean, not a number ({target})"
    return lambda row: f"{name}: {show(source[row])} not castable to {target} without loss"


def check_timestamp(
    table: pa.Table, name: str, now: datetime, max_future: timedelta, reasons: Reasons
) -> pa.Array:
    n = table.num_rows
    if name not in table.column_names:
        reasons.add(np.ones(n, dtype=bool), lambda _row: f"{name}: timestamp missing")
        return pa.nulls(n, TIMESTAMP_TYPE)
    source = column_values(table, name)
    cast, failed = lossless_cast(source, TIMESTAMP_TYPE)
    if pa.types.is_timestamp(source.type) and source.type.tz is not None:
        # An aware timestamp fails only when its microseconds overflow int64 (casting.py).
        reasons.add(failed, lambda row: f"{name}: {show(source[row])} {_BEYOND_MICROSECONDS}")
    elif castable_to_timestamp(source.type):
        reasons.add(failed, lambda row: f"{name}: {show(source[row])} is not a time-zone-aware timestamp")
    else:  # an epoch number or a date: name the type, so the sender sees why a plain value is refused
        reasons.add(
            failed,
            lambda row: (
                f"{name}: {show(source[row])} is of type {source.type}, not a time-zone-aware timestamp"
                f" (accepted: {TIMESTAMP_SOURCES})"
            ),
        )
    valid = cast.is_valid().to_numpy(zero_copy_only=False)
    reasons.add(~valid & ~failed, lambda _row: f"{name}: timestamp is null")
    limit_us = epoch_us(now + max_future)
    micros = pc.fill_null(cast.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
    ahead = valid & (micros > limit_us)
    reasons.add(
        ahead,
        lambda row: f"{name}: {show(cast[row])} is more than {max_future} ahead of now ({now.isoformat()})",
    )
    # Before year 1 (or, when max_future allows it, after 9999) no offline date partition can hold it:
    # accepted, it failed the offline write (the whole batch; a stream's outbox drain for good).
    outside = valid & ~ahead & ((micros < EARLIEST_EVENT_US) | (micros > LATEST_EVENT_US))
    reasons.add(outside, lambda row: f"{name}: {show(cast[row])} {_OUT_OF_RANGE}")
    return cast


_OUT_OF_RANGE = "is outside the event times the stores hold (years 1 to 9999, UTC)"
_BEYOND_MICROSECONDS = "is beyond the range of microsecond timestamps (about ±292,000 years)"


def check_values(
    table: pa.Table, column: ValueColumn, reasons: Reasons, fraction: float | None = None
) -> pa.Array:
    """``column``'s values cast, their failures added to ``reasons``; ``fraction``: the null fraction the
    batch rule judges (None: this table's)."""
    n, name, rule = table.num_rows, column.name, column.rule
    source, cast, failed = cast_values(table, column)
    if source is not None:
        reasons.add(failed, not_castable(name, source, column.arrow_type))
    valid = cast.is_valid().to_numpy(zero_copy_only=False)
    if column.finite and valid.any():
        infinite = mask(pc.is_inf(cast))
        reasons.add(infinite, lambda row: f"{name}: {show(cast[row])} is not finite")
    nulls = ~valid & ~failed
    null_count = int(nulls.sum())
    if null_count and rule.max_null_fraction == 0:  # a rule of each record, whatever the batch
        reasons.add(nulls, lambda _row: f"{name}: null (NaN or missing) not allowed")
    elif null_count:
        if fraction is None:
            fraction = null_count / n
        if fraction > rule.max_null_fraction:
            reasons.add(
                nulls,
                lambda _row: (
                    f"{name}: null (null fraction {fraction:.3f} in batch exceeds max"
                    f" {rule.max_null_fraction:g})"
                ),
            )
    check_rule(cast, valid, rule, name, "", reasons)
    for derived in column.derived:
        why = f" (the rule of feature {derived.feature!r}, the {derived.aggregation})"
        check_rule(cast, valid, derived.rule, name, why, reasons)
    return cast


def cast_values(
    table: pa.Table, column: ValueColumn
) -> tuple[pa.Array | None, pa.Array, npt.NDArray[np.bool_]]:
    """``column``'s source values (None: the table lacks it), cast, and where the cast failed."""
    n = table.num_rows
    if column.name not in table.column_names:
        return None, pa.nulls(n, column.arrow_type), np.zeros(n, dtype=bool)
    source = column_values(table, column.name)
    cast, failed = lossless_cast(source, column.arrow_type)
    return source, cast, failed
