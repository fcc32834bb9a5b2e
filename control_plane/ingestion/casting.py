"""Lossless casts of Arrow arrays to the registered types, value by value.

``lossless_cast`` never raises on bad data: it returns the cast array (null where a value could not be
cast) and a mask of the values that failed, so validation can quarantine exactly those records. The fast
path is one vectorized ``pyarrow`` safe cast; only when that refuses (some value is bad) does it fall
back to casting value by value, which is slow but runs only on bad data.

What "without loss" means per target:

* integers: the value must be integral and in range (``3.0`` -> 3 is fine, ``3.5`` is not), text
  included: a decimal number (``"3"``, ``"3.0"``, ``"3e0"``) whose value is a whole number in range, as
  a stream's fields are text (a Kafka record's JSON ``3.0`` arrives as ``"3.0"``, redis-py writes a float
  3.0 so) and must name what the same number names in a batch;
* a bool casts to no number: ``true`` for a number is a schema mistake, not 1 (a stream's ``"true"`` is
  no number either, so both paths refuse it);
* floats: integers must be exactly representable (|v| <= 2**53 for float64); narrowing float64 to
  float32 accepts rounding (no decimal fraction survives it exactly) but refuses overflow to infinity,
  and so does parsing text: ``"1e309"`` is refused, while an infinity written as one (``"inf"``,
  ``"-Infinity"``, any case) is kept as the infinity it names;
* bool: from booleans, from numbers whose value is 0 or 1 (an integer, or a float: pandas makes a nullable
  integer column float64, so 1.0 and 0.0 too), from the strings Arrow parses (``true``/``false`` in any
  case, ``1``/``0``; not ``"1.0"`` nor ``"yes"``). Only a batch view has bool features (a streaming view's
  are its aggregations' outputs, none of which may be a bool), so no stream's text is judged by this;
* a timestamp, date, time or duration casts to no number or bool: Arrow read it as a count of its own
  unit (a date as days since 1970, a timestamp as seconds or nanoseconds as its type had them), so the
  same instant sent in two units became two different values, and a date sent for an integer feature an
  accepted 20454. Text is left to the caller: a join key refuses it too (``column_checks``), an event
  field that is only counted takes any type;
* timestamps: only time-zone-aware values (an aware Arrow timestamp, or an ISO 8601 string with a zone
  offset or ``Z``), converted to UTC microseconds, floored (digits below a microsecond are dropped, from a
  nanosecond timestamp or a string alike, also before 1970: the stores hold microseconds); naive ones fail,
  and so does every value of any other type: Arrow would read an integer as microseconds since the epoch,
  so epoch milliseconds or seconds would land, accepted, in 1970, and a date has no time of day nor zone.
  A second or millisecond timestamp whose microseconds overflow int64 (beyond about ±292,000 years) fails
  too, as the offline store refuses it, instead of wrapping around to some other time.

NaN counts as a missing value: it becomes null before any check, so the null rules apply to it.

Encodings: a dictionary-encoded column is read through its dictionary; a run-end-encoded one (legal
Arrow IPC, which most compute kernels lack: ``take`` raised ArrowNotImplementedError, an IngestBatch
failed with INTERNAL) is decoded to its plain values before anything reads it (``decode_run_ends``).

``epoch_us`` turns one aware Python datetime into UTC microseconds since 1970, exactly, for the values
compared with or written into such timestamp columns (the future limit of validation, ``ingested_ts``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from clients.int64 import INT64_MAX

TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
#: What a timestamp may be given as, for reasons that name it.
TIMESTAMP_SOURCES = "a timestamp with a time zone, or an ISO 8601 string with a zone offset or Z"


def epoch_us(moment: datetime) -> int:
    """Microseconds since 1970 of an aware ``moment``, exactly (``timestamp() * 1e6`` is off by one for
    about 2 % of instants: a float holds ~16 digits)."""
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def castable_to_timestamp(source: pa.DataType) -> bool:
    """Whether values of ``source`` may become timestamps at all (see the module docstring)."""
    if pa.types.is_dictionary(source):
        source = source.value_type
    return bool(
        pa.types.is_timestamp(source) or pa.types.is_string(source) or pa.types.is_large_string(source)
    )


def decode_run_ends(table: pa.Table) -> pa.Table:
    """``table`` with each run-end-encoded column decoded to the plain values it stands for (the others
    as they are; the table itself when none is)."""
    for index, field in enumerate(table.schema):
        if pa.types.is_run_end_encoded(field.type):
            decoded = pc.run_end_decode(table.column(index))
            table = table.set_column(index, pa.field(field.name, decoded.type, field.nullable), decoded)
    return table


def nan_to_null(values: pa.Array) -> pa.Array:
    if pa.types.is_floating(values.type) and values.null_count < len(values):
        nan = pc.is_nan(values).to_numpy(zero_copy_only=False)
        if nan.any():
            return pc.if_else(pa.array(nan), pa.nulls(len(values), values.type), values)
    return values


def lossless_cast(values: pa.Array, target: pa.DataType) -> tuple[pa.Array, npt.NDArray[np.bool_]]:
    """``values`` cast to ``target`` and the mask of non-null values that could not be cast (they are
    null in the result)."""
    values = nan_to_null(values)
    n = len(values)
    if pa.types.is_timestamp(target):
        if pa.types.is_dictionary(values.type):
            values = values.dictionary_decode()
        naive = pa.types.is_timestamp(values.type) and values.type.tz is None
        if naive or not castable_to_timestamp(values.type):  # every present value fails
            return pa.nulls(n, target), values.is_valid().to_numpy(zero_copy_only=False)
        if pa.types.is_timestamp(values.type):
            if values.type.unit == "ns":
                # Floored, as a string's digits are dropped and as the offline store and the join floor
                # theirs: the cast alone truncates toward zero, one microsecond up before 1970. In UTC:
                # pyarrow floors in the column's own zone, where a DST hour's local time is ambiguous.
                values = pc.floor_temporal(values.cast(pa.timestamp("ns", tz="UTC")), unit="microsecond")
            return _timestamp_to_micros(values, target)
    if values.type == target:
        return values, np.zeros(n, dtype=bool)
    if (is_temporal(values.type) and not pa.types.is_string(target)) or bool_to_number(values.type, target):
        # Every present value fails.
        return pa.nulls(n, target), values.is_valid().to_numpy(zero_copy_only=False)
    cast = _safe_cast(values, target)
    if cast is None and pa.types.is_timestamp(target):
        values = _microsecond_digits(values)
        cast = _safe_cast(values, target)
    if cast is None and pa.types.is_integer(target) and _is_text(_plain(values.type)):
        cast, failed = whole_numbers(values, target)
    elif cast is None:
        cast, failed = _cast_each(values, target)
    else:
        failed = np.zeros(n, dtype=bool)
    failed |= _lossy(values, cast, target)
    if failed.any():
        cast = pc.if_else(pa.array(failed), pa.nulls(n, target), cast)
    return nan_to_null(cast), failed


def bool_to_number(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether ``source`` is a bool (dictionary-encoded or not) and ``target`` a number: refused."""
    source = _plain(source)
    numeric = pa.types.is_integer(target) or pa.types.is_floating(target) or pa.types.is_decimal(target)
    return bool(pa.types.is_boolean(source) and numeric)


def whole_numbers(values: pa.Array, target: pa.DataType) -> tuple[pa.Array, npt.NDArray[np.bool_]]:
    """Text as integers of ``target``: each a decimal number (sign, ASCII digits, fraction, exponent; no
    spaces) whose value is a whole number in ``target``'s range, read exactly (``Decimal``: a float would
    round ``"9007199254740993.0"``). Only for text Arrow's integer parsing refused, so plain digits never
    pay."""
    bounds = np.iinfo(target.to_pandas_dtype())
    low, high = Decimal(int(bounds.min)), Decimal(int(bounds.max))
    results: list[int | None] = []
    failed = np.zeros(len(values), dtype=bool)
    for index, text in enumerate(values.to_pylist()):
        if text is None:
            results.append(None)
            continue
        number = _decimal(text)
        # Bounds first: a whole number of a huge exponent ("1e999999999") is never made into an int.
        if number is None or not low <= number <= high or number != number.to_integral_value():
            results.append(None)
            failed[index] = True
        else:
            results.append(int(number))
    return pa.array(results, type=target), failed


def _decimal(text: str) -> Decimal | None:
    """``text`` as a ``Decimal`` when it is a decimal number (``_DECIMAL_NUMBER``) whose exponent ``Decimal``
    holds, else None. Past that (``"1e999999999999999999999"``) the constructor raises ``InvalidOperation``,
    which stopped a batch run whole and the stream materializer on that entry, again at every start."""
    if not _DECIMAL_NUMBER.fullmatch(text):
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


# ASCII digits only, as Arrow's parsers read: ``\d`` takes every Unicode digit ("٣", "３"), which
# ``Decimal`` reads too, so such text named an integer key's entity where a float refused it.
_DECIMAL_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _timestamp_to_micros(values: pa.Array, target: pa.DataType) -> tuple[pa.Array, npt.NDArray[np.bool_]]:
    """An aware timestamp of any unit as ``target`` (microseconds), failing the seconds or milliseconds
    whose microseconds do not fit int64 (beyond about ±292,000 years). An unchecked cast wrapped them
    around silently: 18448444073709 s (year ~586,000) became an accepted 2023 event."""
    n = len(values)
    try:
        return values.cast(target, safe=True), np.zeros(n, dtype=bool)
    except pa.ArrowInvalid:  # some value overflows: only seconds or milliseconds can
        pass
    factor = 1_000 if values.type.unit == "ms" else 1_000_000
    raw, limit = values.cast(pa.int64()), INT64_MAX // factor
    # Compared both ways rather than by abs: abs(INT64_MIN) itself overflows.
    beyond = pc.or_(pc.greater(raw, limit), pc.less(raw, -limit))
    failed = np.asarray(pc.fill_null(beyond, False).to_numpy(zero_copy_only=False), dtype=bool)
    kept = pc.if_else(pa.array(failed), pa.nulls(n, values.type), values)
    return kept.cast(target, safe=True), failed


def _safe_cast(values: pa.Array, target: pa.DataType) -> pa.Array | None:
    """The vectorized cast, or None when some value refuses it."""
    try:
        return values.cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None


def _microsecond_digits(values: pa.Array) -> pa.Array:
    """Time strings with the digits below a microsecond dropped, as a nanosecond timestamp's are, so a
    record quarantined with its exact nanoseconds (validation writes them into the payload) replays.
    Run only when the plain cast refuses, so strings with at most six digits never pay for the regex."""
    return pc.replace_substring_regex(values, pattern=r"(:\d\d\.\d{6})\d+", replacement=r"\1")


def _cast_each(values: pa.Array, target: pa.DataType) -> tuple[pa.Array, npt.NDArray[np.bool_]]:
    results: list[object] = []
    failed = np.zeros(len(values), dtype=bool)
    for index, scalar in enumerate(values):
        if not scalar.is_valid:
            results.append(None)
            continue
        try:
            results.append(pa.array([scalar.as_py()], type=values.type).cast(target, safe=True)[0].as_py())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OverflowError):
            results.append(None)
            failed[index] = True
    return pa.array(results, type=target), failed


def _lossy(source: pa.Array, cast: pa.Array, target: pa.DataType) -> npt.NDArray[np.bool_]:
    """Values Arrow's safe cast accepts although they change: integers other than 0/1 to bool, finite
    floats that overflow to infinity when narrowed."""
    lossy = np.zeros(len(source), dtype=bool)
    if pa.types.is_boolean(target) and (
        pa.types.is_integer(source.type) or pa.types.is_floating(source.type)
    ):
        lossy = pc.fill_null(pc.invert(pc.is_in(source, pa.array([0, 1], source.type))), False).to_numpy(
            zero_copy_only=False
        )
    elif pa.types.is_floating(target) and pa.types.is_floating(source.type):
        overflow = pc.and_(pc.is_finite(source), pc.invert(pc.is_finite(cast)))
        lossy = pc.fill_null(overflow, False).to_numpy(zero_copy_only=False)
    elif pa.types.is_floating(target) and _is_text(source.type):
        # Arrow parses a number beyond the type's range as an infinity; only an infinity literal may be one.
        infinite = pc.fill_null(pc.is_inf(cast), False)
        if pc.any(infinite).as_py():
            literal = pc.match_substring_regex(source, pattern=_INFINITY_LITERAL, ignore_case=True)
            lossy = pc.and_(infinite, pc.invert(pc.fill_null(literal, False))).to_numpy(zero_copy_only=False)
    return np.asarray(lossy, dtype=bool)


# What Arrow's text-to-float parsing reads as an infinity (it accepts no spaces around a number).
_INFINITY_LITERAL = r"^[+-]?inf(inity)?$"


def is_temporal(arrow_type: pa.DataType) -> bool:
    """A timestamp, date, time, duration or interval, dictionary-encoded or not."""
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    return bool(pa.types.is_temporal(arrow_type))


def _plain(arrow_type: pa.DataType) -> pa.DataType:
    """A dictionary type's value type; any other type itself."""
    return arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type


def _is_text(arrow_type: pa.DataType) -> bool:
    return bool(pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type))
