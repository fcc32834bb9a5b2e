"""Request messages built from an SDK method's plain arguments, each checked against its proto field first.

protobuf refuses an out-of-range whole number or an unknown enum name with a bare ``ValueError`` ("Value
out of range: -3", 'unknown enum label "METRIC_AGGREGATE_AVG"') that names neither the argument nor what
it takes, and a value of the wrong type with a bare ``TypeError``. :func:`checked_request` checks every
field it is given against the message's descriptor (so the range is the proto's, never restated by hand)
and raises :class:`~clients.errors.InvalidArgument` naming the argument and the values it accepts, before any
request is built. :func:`choice` does the same for a word the SDK maps to an enum value itself."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from clients.errors import InvalidArgument

_M = TypeVar("_M", bound=Message)
_V = TypeVar("_V")

_F = FieldDescriptor
#: The values each whole-number field type holds.
_RANGES: dict[int, tuple[int, int]] = {
    **dict.fromkeys((_F.TYPE_INT32, _F.TYPE_SINT32, _F.TYPE_SFIXED32), (-(2**31), 2**31 - 1)),
    **dict.fromkeys((_F.TYPE_UINT32, _F.TYPE_FIXED32), (0, 2**32 - 1)),
    **dict.fromkeys((_F.TYPE_INT64, _F.TYPE_SINT64, _F.TYPE_SFIXED64), (-(2**63), 2**63 - 1)),
    **dict.fromkeys((_F.TYPE_UINT64, _F.TYPE_FIXED64), (0, 2**64 - 1)),
}


def checked_request(message_type: type[_M], **fields: Any) -> _M:
    """``message_type(**fields)`` once every whole-number and enum field among ``fields`` (repeated ones
    element by element) was found to hold a value of its proto type. An argument named like its field
    is named in the error as it is; ``None`` leaves a field unset, as protobuf does."""
    descriptor = message_type.DESCRIPTOR
    for name, value in fields.items():
        field = descriptor.fields_by_name.get(name)
        if field is None:
            known = ", ".join(f.name for f in descriptor.fields)
            raise InvalidArgument(f"{descriptor.name} has no field {name!r}; its fields are {known}")
        if value is None or (field.message_type is not None and field.message_type.GetOptions().map_entry):
            continue
        if field.is_repeated and not isinstance(value, (str, bytes)):
            for index, item in enumerate(value):
                check_field(field, item, f"{name}[{index}]")
        else:
            check_field(field, value, name)
    try:
        return message_type(**fields)
    except (TypeError, ValueError) as error:  # a mistyped string, float or message field
        raise InvalidArgument(f"{descriptor.name}: {error}") from None


def check_field(field: Any, value: Any, name: str) -> None:
    """INVALID_ARGUMENT naming ``name`` unless ``value`` fits ``field``, a ``FieldDescriptor`` (of the
    pure-Python or the upb implementation: hence untyped); whole numbers, enums and strings only (a string
    field given a number was protobuf's bare TypeError naming no field), other types are left to
    protobuf."""
    if field.enum_type is not None:
        _check_enum(field.enum_type, value, name)
        return
    if field.type == _F.TYPE_STRING:
        if not isinstance(value, (str, bytes)):  # protobuf takes UTF-8 bytes too
            raise InvalidArgument(f"{name}: expected a string, got {_shown(value)}")
        return
    bounds = _RANGES.get(field.type)
    if bounds is None:
        return
    low, high = bounds
    expected = f"a whole number from {low} to {high}"
    if isinstance(value, bool):
        raise InvalidArgument(f"{name}: expected {expected}, got {value!r}")
    try:
        number = operator.index(value)  # int, numpy integers; not 1.0 or "1", which protobuf refuses too
    except TypeError:
        raise InvalidArgument(f"{name}: expected {expected}, got {_shown(value)}") from None
    if not low <= number <= high:
        raise InvalidArgument(f"{name}: expected {expected}, got {number}")


def choice(value: object, name: str, choices: Mapping[str, _V]) -> _V:
    """``choices[value]`` (a word the SDK maps to a proto value), or INVALID_ARGUMENT naming ``name``
    and listing the accepted words."""
    if isinstance(value, str) and value in choices:
        return choices[value]
    raise InvalidArgument(f"{name}: expected one of {', '.join(choices)}, got {_shown(value)}")


def str_list(value: object, name: str) -> list[str]:
    """``value``, an iterable of strings, as a list; INVALID_ARGUMENT naming ``name`` otherwise. A lone
    str is refused rather than taken for one item: iterated, it was sent as one reference per character
    ("zone_weather" as 12 feature references), and refusing says so where a guess might hide a typo."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidArgument(f"{name}: expected a list of strings, got {type(value).__name__}")
    items = list(value)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise InvalidArgument(f"{name}[{index}]: expected a string, got {_shown(item)}")
    return items


def mapping_list(value: object, name: str) -> list[Mapping[str, Any]]:
    """``value``, an iterable of mappings (entity rows), as a list; INVALID_ARGUMENT naming ``name`` for
    one mapping given alone (iterated, it is its keys: AttributeError 'str' has no 'items') or any item
    that is not a mapping."""
    if isinstance(value, (Mapping, str, bytes)) or not isinstance(value, Iterable):
        shown = "one mapping (wrap it in a list)" if isinstance(value, Mapping) else type(value).__name__
        raise InvalidArgument(f"{name}: expected a list of mappings, got {shown}")
    items = list(value)
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise InvalidArgument(f"{name}[{index}]: expected a mapping, got {_shown(item)}")
    return items


def _check_enum(enum: Any, value: Any, name: str) -> None:
    """A name must be one of the enum's; a number need only fit an int32: proto3 enums are open, and a
    server with a newer proto may know values these stubs do not (it refuses those it does not know)."""
    if isinstance(value, str):
        if value in enum.values_by_name:
            return
    elif not isinstance(value, bool):
        try:
            if -(2**31) <= operator.index(value) < 2**31:
                return
        except TypeError:
            pass
    accepted = ", ".join(v.name for v in enum.values)
    raise InvalidArgument(f"{name}: expected one of {accepted} (or its number), got {_shown(value)}")


def _shown(value: object) -> str:
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 256 else "<a huge int>"
    return text if len(text) <= 80 else f"{text[:80]}... ({len(text)} characters)"
