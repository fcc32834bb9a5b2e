"""Durations as feature definitions and ``aetherctl`` flags write them: ``90`` seconds, ``45s``, ``30m``,
``1.5h``, ``2d``, ``1h30m``.

Apart from :mod:`control_plane.features.definitions` (which re-exports them) so that the CLI can parse a
flag without importing the definitions' validation, and with it SQLAlchemy, numba and pyarrow."""

from __future__ import annotations

import re
from decimal import Decimal

from clients.int64 import INT64_MAX

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

#: The longest duration: its microseconds still fit a signed 64-bit integer (~292,000 years).
MAX_DURATION_S = INT64_MAX // 1_000_000


def parse_duration(value: int | str) -> int:
    """Seconds in ``value``: an integer number of seconds, or numbers with a unit s/m/h/d, several of
    them allowed (``90``, ``"45s"``, ``"1.5h"``, ``"1h30m"``). ValueError when malformed, negative or not
    a whole number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 90, 45s, 30m, 2h or 1d, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"duration must not be negative, got {value}")
        return value
    text = value.strip()
    if text.isdigit():
        return int(text)
    total = Decimal(0)
    position = 0
    seen: set[str] = set()
    for match in _DURATION_PART.finditer(text):
        between = text[position : match.start()]
        if between.strip() or match.group(2) in seen:
            break
        seen.add(match.group(2))
        total += Decimal(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if not seen or text[position:].strip():
        raise ValueError(f"invalid duration {value!r}; expected e.g. 90, 45s, 30m, 2h, 1d or 1h30m")
    if total != total.to_integral_value():
        raise ValueError(f"duration {value!r} is not a whole number of seconds")
    return int(total)
