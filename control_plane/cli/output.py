"""How ``aetherctl`` prints: aligned plain-text tables for people, JSON for scripts."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Columns padded to their widest cell, two spaces apart; trailing blanks trimmed."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in cells:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))
    lines = []
    for row in [list(headers), *cells]:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def to_jsonable(message: Message) -> dict[str, Any]:
    """A proto message as JSON-ready data: field names as in the .proto, enums by name, defaults kept so
    scripts can rely on every field being present."""
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


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


def timestamp(microseconds: int) -> str:
    """A UTC time in seconds precision, or '-' when unset."""
    if microseconds <= 0:
        return "-"
    moment = dt.datetime.fromtimestamp(microseconds / 1e6, tz=dt.UTC)
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
