"""Quarantined records' payloads (JSON objects) back as what validation and the writers take."""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import pyarrow as pa

from clients.errors import InvalidArgument


def records_table(records: Sequence[Mapping[str, Any]], text_columns: Collection[str] = ()) -> pa.Table:
    """Records (parsed JSON payloads) as a table, one column per field, so validation's casts decide
    what a value is as they did at the original ingest. A column of JSON numbers stays numeric (the
    payload of a float64 column holds 6.0, and the int64 cast accepts the float 6.0 but not the text
    "6.0": an unchanged record failed its replay); any other column is the values' JSON text (strings as
    they are), so a column never mixes types.

    A column of only the words a float's NaN or infinity is written as (``"NaN"``, ``"Infinity"``) is
    float64 too, unless ``text_columns`` (the columns the version registers as strings: string join
    keys, counted event fields) names it, where the word is the string it was. Read as text, a NaN was
    no longer null: an extra all-NaN column (a pandas frame's), which rejects nothing, refused the
    record's replay as "unknown column", and a NaN in an integer column as "'NaN' not castable"."""
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record))
    if not names:
        # Records of no fields (``{}``) are records still: a table of no columns has no rows unless
        # given them, and validation, seeing none, refused none (the replay failed INTERNAL after them).
        return pa.table({"": pa.nulls(len(records))}).drop_columns([""])
    return pa.table(
        {
            name: _column([record.get(name) for record in records], words_are_text=name in text_columns)
            for name in names
        }
    )


# How validation writes a float that JSON has no number for (validation.record_json).
_FLOAT_WORDS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_EXACT_FLOAT_INT = 2**53


def _column(values: list[Any], *, words_are_text: bool) -> pa.Array:
    present = [v for v in values if v is not None]
    numbers = [v for v in present if _is_number(v)]
    if (numbers or (present and not words_are_text)) and all(
        _is_number(v) or (isinstance(v, str) and v in _FLOAT_WORDS) for v in present
    ):
        if len(numbers) == len(present) and all(isinstance(v, int) for v in numbers):
            if all(-(2**63) <= v < 2**63 for v in numbers):
                return pa.array(values, pa.int64())
        elif all(isinstance(v, float) or abs(v) <= _EXACT_FLOAT_INT for v in numbers):
            # Floats (and the words for NaN and the infinities): as the float64 column they came from.
            floats = [_FLOAT_WORDS[v] if isinstance(v, str) else v for v in values]
            return pa.array(floats, pa.float64())
    return pa.array([as_text(v) for v in values], pa.string())  # as text; so is an int beyond int64


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


class JsonObject(dict[str, Any]):
    """A JSON object as parsed, with its (name, value) pairs as written: a name given twice is in
    ``pairs`` twice, where the dict keeps its last value (as ``json.loads``). A stream message that named
    a field twice is quarantined with every value (``source.object_text``), and its replay reads the
    repeat from ``pairs`` (``replay_reading``), as the stream's reader read it."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.pairs = pairs


def parse_payload(payload: str, record_id: int) -> dict[str, Any]:
    """A quarantined record's payload (or its correction), a JSON object, with its pairs as written
    (``JsonObject``)."""
    try:
        parsed = json.loads(payload, object_pairs_hook=JsonObject)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"record {record_id}: payload is not JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise InvalidArgument(f"record {record_id}: payload must be a JSON object")
    return parsed
