"""Rules for the values experiment tracking stores, in one place for the SDK and the control plane.

The SDK applies them when the training loop calls (so a bad value raises there, naming it), the server
applies them to every request (whoever the client is). A value the SDK let through and the server then
refused would cost more than itself: the server refuses a run's whole ``LogBatch`` share, and the SDK sends
it from a background thread, long after the call returned."""

from __future__ import annotations

from clients.errors import InvalidArgument

#: The range of the wire's int64 steps and timestamps.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def check_int64(value: int, what: str) -> int:
    """``value`` when it fits the wire's int64 (protobuf cannot even build a message holding it)."""
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidArgument(f"{what} {value} is outside the 64-bit integer range")
    return value


def check_encodable(text: str, what: str) -> str:
    """``text`` when it can be encoded as UTF-8 (a lone surrogate, e.g. from ``os.fsdecode``, cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidArgument(
            f"{what} {text[:40]!r} is not valid Unicode text (character {error.start} cannot be encoded)"
        ) from None
    return text
