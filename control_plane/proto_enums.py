"""Checking that a message's enum fields hold values their enum defines.

Proto3 enums are open: a number the enum does not define (``correction=999``) parses, travels and is
stored like any other, and only fails where code names it (``MultipleTestingCorrection.Name``) or looks it
up in a table of the known values, far from the request that brought it in. A config is checked here when
it is written, so the caller is told which field is wrong, and when a stored one is read back, so a row
written before the check is refused by name instead of failing everything computed from it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import cast

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message


def enum_problem(field: FieldDescriptor, value: int, *, required: bool = False) -> str | None:
    """Why ``value`` cannot be held by the enum ``field``, or None: a number its enum does not define, or
    the enum's 0 (``..._UNSPECIFIED``) where ``required``. The message names the field and the values
    allowed."""
    enum = field.enum_type
    if enum is None:
        raise TypeError(f"{field.full_name} is not an enum field")
    allowed = [v for v in enum.values if not (required and v.number == 0)]
    if any(v.number == value for v in allowed):
        return None
    what = "is required" if value == 0 else f"{value} is not a value of {enum.name}"
    return f"{field.name} {what}: use one of {', '.join(v.name for v in allowed)}"


def enum_problems(message: Message, *, required: Collection[str] = ()) -> list[str]:
    """:func:`enum_problem` for each enum field of ``message`` (repeated ones value by value), and of its
    set sub-messages (named ``parent.field``; map fields are not looked into); ``required`` names the
    fields whose 0 is refused too."""
    problems: list[str] = []
    for field, value in message.ListFields():
        repeated = field.is_repeated
        values = list(value) if repeated else [value]
        if field.type == FieldDescriptor.TYPE_ENUM:
            for item in values:
                problem = enum_problem(field, item, required=field.name in required)
                if problem is not None:
                    problems.append(problem)
        elif field.type == FieldDescriptor.TYPE_MESSAGE and not _is_map(field):
            for item in values:
                problems.extend(f"{field.name}.{problem}" for problem in enum_problems(item))
    # ListFields leaves out fields at 0; only a required one can be wrong there.
    for name in required:
        # The stubs type the table as the pure-Python or the upb descriptor; both are the same API.
        descriptor = cast(FieldDescriptor, message.DESCRIPTOR.fields_by_name[name])
        if not descriptor.is_repeated and getattr(message, name) == 0:
            problem = enum_problem(descriptor, 0, required=True)
            if problem is not None:
                problems.append(problem)
    return problems


def _is_map(field: FieldDescriptor) -> bool:
    entry = field.message_type
    return entry is not None and entry.GetOptions().map_entry
