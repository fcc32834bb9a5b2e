"""Bounds what one audit entry stores, so that every entry can be read back over gRPC.

An entry stores the whole state before and after a change, and the writes that make states large allow
up to 2 MiB each (a feature view's description, a model version's description, a run's metrics): one
edit made an entry of over 4 MiB of JSON, past gRPC's 4 MiB receive limit, and as a page or an export
message always holds at least one entry, no page reaching it could ever be read.

When ``before`` and ``after`` together take more than :data:`MAX_STATES_BYTES` of canonical JSON, their
largest string values, then (if many small values are what is large) the states themselves, largest
first, are replaced by a marker ``{"omitted_sha256": <hex>, "bytes": N}``: the sha256 and UTF-8 length
of the string, or of the state's canonical JSON. The entry stays readable and still pins what it
described: whoever holds the original value can check it against the marker, and the hash chain covers
the marker as stored."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

from control_plane.audit.chain import canonical_json

#: The most bytes of canonical JSON ``before`` and ``after`` of one entry take together: a quarter of
#: gRPC's 4 MiB, leaving room for the entry's other fields and for a page's or chunk's other entries.
MAX_STATES_BYTES = 1024 * 1024
OMITTED_SHA256 = "omitted_sha256"


def omitted(value: Any) -> dict[str, Any]:
    """The marker that stands for ``value``: a string's own UTF-8 bytes, anything else's canonical JSON."""
    data = (value if isinstance(value, str) else canonical_json(value)).encode("utf-8")
    return {OMITTED_SHA256: hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def json_bytes(value: Any) -> int:
    return len(canonical_json(value).encode("utf-8"))


#: The most a marker takes as JSON (its byte count given 15 digits): omitting a string saves at least
#: its own JSON size less this.
_MARKER_BYTES = json_bytes(omitted("")) + 15


def bounded(before: Any, after: Any, limit: int = MAX_STATES_BYTES) -> tuple[Any, Any]:
    """``before`` and ``after`` (normalized JSON data) as stored: unchanged when together they fit
    ``limit`` bytes of canonical JSON, else with values replaced by markers until they do."""
    if json_bytes(before) + json_bytes(after) <= limit:
        return before, after
    trimmed = _omit_largest_strings(before, after, limit)
    if trimmed is not None:
        return trimmed
    # Too many small values (a run's many metrics): no set of strings is enough, so omit whole states.
    states = [before, after]
    for index in sorted(range(2), key=lambda i: json_bytes(states[i]), reverse=True):
        states[index] = omitted(states[index])
        if json_bytes(states[0]) + json_bytes(states[1]) <= limit:
            break
    return states[0], states[1]


def _omit_largest_strings(before: Any, after: Any, limit: int) -> tuple[Any, Any] | None:
    """The states with their largest strings omitted, as few as make them fit; None if all of them
    would not be enough."""
    excess = json_bytes(before) + json_bytes(after) - limit
    sizes = sorted((json_bytes(text) for text in (*_strings(before), *_strings(after))), reverse=True)
    for size in sizes:
        if size <= _MARKER_BYTES:
            return None  # the rest are too short to save anything
        excess -= size - _MARKER_BYTES
        if excess <= 0:
            # Strings of exactly ``size`` past this one are omitted too: more room, never less.
            return _omit_strings(before, size), _omit_strings(after, size)
    return None


def _strings(value: Any) -> Iterator[str]:
    """Every string value in ``value`` (mapping keys are names, bounded where they are written)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _omit_strings(value: Any, min_bytes: int) -> Any:
    """``value`` with each string taking at least ``min_bytes`` of JSON replaced by its marker."""
    if isinstance(value, str):
        return omitted(value) if json_bytes(value) >= min_bytes else value
    if isinstance(value, dict):
        return {key: _omit_strings(item, min_bytes) for key, item in value.items()}
    if isinstance(value, list):
        return [_omit_strings(item, min_bytes) for item in value]
    return value
