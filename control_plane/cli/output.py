"""How ``aetherctl`` prints: aligned plain-text tables for people, JSON for scripts."""

from __future__ import annotations

import datetime as dt
import json
import math
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any, TextIO, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from clients.time_bounds import LATEST_TIME_US


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Columns padded to their widest cell, two spaces apart; trailing blanks trimmed. Widths are what a
    terminal shows (a CJK character or an emoji takes two columns, a combining mark none), and a cell's
    control characters are shown escaped (``\\n``, ``\\x1b``): a newline in a description or a reason
    started a line of no row, and an escape sequence from the server reached the terminal."""
    cells = [[_printable(str(cell)) for cell in row] for row in rows]
    widths = [display_width(header) for header in headers]
    for row in cells:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], display_width(cell))
    lines = []
    for row in [list(headers), *cells]:
        padded = (cell + " " * (width - display_width(cell)) for cell, width in zip(row, widths, strict=True))
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def display_width(text: str) -> int:
    """The columns ``text`` takes in a terminal: two for East Asian wide and full-width characters, none
    for combining marks and zero-width characters, one for the rest."""
    width = 0
    for char in text:
        if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def _printable(text: str) -> str:
    """``text`` with its control characters (C0, DEL, C1) shown as escapes, so a cell is one line that
    cannot drive the terminal."""
    if text.isprintable():
        return text
    return "".join(
        char if char.isprintable() or char == " " else char.encode("unicode_escape").decode("ascii")
        for char in text
    )


def to_jsonable(message: Message) -> dict[str, Any]:
    """A proto message as JSON-ready data: field names as in the .proto, enums by name, defaults kept so
    scripts can rely on every field being present. 64-bit integers are JSON numbers, as in every other
    output of aetherctl (audit lines, counts): proto3's JSON mapping writes them as strings, so a script
    adding ``accepted + quarantined`` concatenated them. (Python's json reads any size of number; a
    JavaScript reader loses precision above 2**53.)"""
    data = MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    _int64_as_numbers(cast(Descriptor, message.DESCRIPTOR), data)
    return data


_INT64_TYPES = frozenset({FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64})


def _int64_as_numbers(descriptor: Descriptor, data: dict[str, Any]) -> None:
    """Turns, in place, the strings of ``data``'s 64-bit integer fields (at any depth) into ints."""
    for field in descriptor.fields:
        value = data.get(field.name)
        if value is None:
            continue
        message_type = field.message_type
        if message_type is not None and message_type.GetOptions().map_entry:
            entry = message_type.fields_by_name["value"]
            if entry.cpp_type in _INT64_TYPES:
                data[field.name] = {key: int(item) for key, item in value.items()}
            elif entry.message_type is not None and _is_ours(entry.message_type):
                for item in value.values():
                    _int64_as_numbers(entry.message_type, item)
        elif field.cpp_type in _INT64_TYPES:
            data[field.name] = [int(item) for item in value] if isinstance(value, list) else int(value)
        elif message_type is not None and _is_ours(message_type):
            for item in value if isinstance(value, list) else [value]:
                _int64_as_numbers(message_type, item)


def _is_ours(descriptor: Descriptor) -> bool:
    """A message type written field by field (the well-known types have JSON forms of their own)."""
    return not descriptor.full_name.startswith("google.protobuf.")


def print_json(data: object, stream: TextIO) -> None:
    """Strict JSON: a non-finite float is written as proto3's JSON mapping writes it (``"NaN"``,
    ``"Infinity"``, ``"-Infinity"``, as :func:`to_jsonable` gives them), never as the bare ``NaN`` that
    ``json.dump`` writes by default and that other JSON parsers (``jq``) refuse."""
    json.dump(_finite(data), stream, indent=2, sort_keys=False, allow_nan=False)
    stream.write("\n")


def _finite(data: object) -> object:
    if isinstance(data, float) and not math.isfinite(data):
        return "NaN" if math.isnan(data) else ("Infinity" if data > 0 else "-Infinity")
    if isinstance(data, dict):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(value) for value in data]
    return data


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def timestamp(microseconds: int) -> str:
    """A UTC time in seconds precision, or '-' when unset. A time no date holds (after year 9999: the
    server refuses one now, but an older server stored them) is the number itself with a note, never a
    traceback: ``datetime.fromtimestamp`` raised on a run started at 2**63 - 1, and ``runs list`` of its
    experiment died with it."""
    if microseconds <= 0:
        return "-"
    if microseconds > LATEST_TIME_US:
        return f"{microseconds} (microseconds since 1970: after year 9999)"
    moment = _EPOCH + dt.timedelta(microseconds=microseconds)  # exact, where a float was not
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def duration(seconds: int) -> str:
    """Seconds in the largest exact unit (``7200`` -> ``2h``); ``0`` is never stale, shown as '-'."""
    if seconds <= 0:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def tags(values: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(values.items())) or "-"
