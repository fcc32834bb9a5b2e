"""How validation shows the values it rejects: in a reason (``temperature_c: 75.2 above max 60``) and in
the quarantined copy of the record (JSON). Neither may raise, whatever the value: a reason or a copy that
raised would fail the whole batch (on a stream, stop the materializer at that message for good) instead
of quarantining the one record."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: The longest text a reason shows of a value (then its length).
SHOWN_CHARACTERS = 100


def temporal_as_text(table: pa.Table) -> pa.Table:
    """``table`` with its nanosecond columns (timestamps, times, durations) as text, and any other
    temporal column Python cannot hold (a time after year 9999 or before year 1). Without pandas,
    ``as_py`` cannot hold a nanosecond, nor a datetime outside years 1-9999 (both raise), and a
    quarantined payload must keep the exact value: a record is rejected, never lost to an exception."""
    for index, field in enumerate(table.schema):
        column = table.column(index)
        if _is_nanos(field.type) or (_is_temporal(field.type) and not _python_holds(column)):
            table = table.set_column(index, field.name, _temporal_text(column))
    return table


def _is_temporal(arrow_type: pa.DataType) -> bool:
    return bool(pa.types.is_temporal(arrow_type))


def _python_holds(values: pa.ChunkedArray) -> bool:
    try:
        values.to_pylist()
    except (OverflowError, ValueError):
        return False
    return True


def _is_nanos(arrow_type: pa.DataType) -> bool:
    temporal = pa.types.is_timestamp(arrow_type) or pa.types.is_time64(arrow_type)
    return bool((temporal or pa.types.is_duration(arrow_type)) and arrow_type.unit == "ns")


def _temporal_text(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    if not pa.types.is_timestamp(values.type):
        return values.cast(pa.string())  # times as HH:MM:SS.fffffffff, durations as their count, dates
    # ISO 8601 in the column's zone (naive stays naive), as datetime.isoformat writes timestamps: no
    # fraction on a whole second, six digits on a whole microsecond, nine only when needed. Arrow formats
    # from the stored integer, so years past 9999 (where datetime stops) print too.
    text = pc.strftime(values, format="%Y-%m-%dT%H:%M:%S" + ("%Ez" if values.type.tz else ""))
    text = pc.replace_substring_regex(text, pattern=r"(:\d\d)\.0+(\D|$)", replacement=r"\1\2")
    return pc.replace_substring_regex(text, pattern=r"(:\d\d\.\d{6})000", replacement=r"\1")


def record_json(record: dict[str, Any]) -> str:
    """A record as JSON text: timestamps in ISO 8601 (naive ones stay naive, so the reason stays
    visible), NaN and infinities as the strings ``"NaN"``/``"Infinity"``, bytes as UTF-8 text."""
    return json.dumps({key: _jsonable(value) for key, value in record.items()}, sort_keys=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def show(scalar: pa.Scalar) -> str:
    """A value for a reason. Never raises: a reason is written for every value validation rejects, and
    one that raised would fail the whole batch (and, on a stream, stop the materializer at that message
    for good) instead of quarantining the one record."""
    if _is_nanos(scalar.type):
        return _as_text(scalar)
    try:
        value = scalar.as_py()
    except (OverflowError, ValueError, pa.ArrowException):
        # A time after year 9999 in UTC (a valid "9999-12-31T23:00:00-05:00") has no Python datetime.
        return _as_text(scalar)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return number(value, float32=pa.types.is_float32(scalar.type))
    if isinstance(value, str) and len(value) > SHOWN_CHARACTERS:
        # The record's copy keeps the whole value; the reason needs only enough to recognise it (a 10 MB
        # string was written into every reason that named it, once more per rule it failed).
        return f"{value[:SHOWN_CHARACTERS]!r}... ({len(value)} characters)"
    return repr(value) if isinstance(value, str) else str(value)


def number(value: float, *, float32: bool = False) -> str:
    """``value`` short (``60``, ``75.2``, ``1e+20``) where that reads back as the same number (in float32
    for a float32), else in full: six digits showed a float32 0.6999999 rejected by ``min: 0.7`` as
    "0.7 below min 0.7", and a bound of 2**53 as 9.0072e+15."""
    short = f"{value:g}"
    if not math.isfinite(value) or _same(float(short), value, float32):
        return short
    if value.is_integer():
        return str(int(value))
    return str(np.float32(value)) if float32 else repr(value)


def _same(a: float, b: float, float32: bool) -> bool:
    with np.errstate(over="ignore"):
        return bool(np.float32(a) == np.float32(b)) if float32 else a == b


def _as_text(scalar: pa.Scalar) -> str:
    """``scalar`` formatted by Arrow from its stored value, without a Python object."""
    try:
        one = pa.array([scalar], scalar.type)
        return str((_temporal_text(one) if _is_temporal(scalar.type) else one.cast(pa.string()))[0].as_py())
    except (OverflowError, ValueError, pa.ArrowException):
        return f"<{scalar.type} value>"
