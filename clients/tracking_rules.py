"""Rules for the values experiment tracking stores, in one place for the SDK and the control plane.

The SDK applies them when the training loop calls (so a bad value raises there, naming it), the server
applies them to every request (whoever the client is). A value the SDK let through and the server then
refused would cost more than itself: the server refuses a run's whole ``LogBatch`` share, and the SDK sends
it from a background thread, long after the call returned."""

from __future__ import annotations

from collections.abc import Mapping

from clients.aether.v1 import tracking_pb2 as pb
from clients.errors import InvalidArgument
from clients.int64 import INT64_MAX, INT64_MIN
from clients.time_bounds import EARLIEST_TIME_US, LATEST_TIME_US

#: Longest metric, parameter or tag key (MLflow's limit too); the width of the server's key columns.
KEY_LENGTH = 250
#: Longest parameter (or tag) value.
PARAM_VALUE_LENGTH = 6000
#: Longest experiment or run name (the control plane's name columns, ``control_plane.db.models``).
NAME_LENGTH = 128
#: The most bytes a run's parameters and tags together take in its ``Run`` message. Without a bound a run
#: logging enough of them (each within the rules) outgrew gRPC's 4 MiB message limit and could no longer
#: be read by GetRun or ListRuns, which send whole runs. 3.5 MiB keeps a config dump of 500 values of
#: 6,000 characters (which the SDK is built to ship) and leaves half a megabyte of the limit to the run's
#: metric summaries and artifacts (some 3,000 metrics with 100-character names).
MAX_RUN_VALUES_BYTES = 3584 * 1024


def check_int64(value: int, what: str) -> int:
    """``value`` when it fits the wire's int64 (protobuf cannot even build a message holding it)."""
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidArgument(f"{what} {value} is outside the 64-bit integer range")
    return value


def check_time_us(value: int, what: str) -> int:
    """``value`` when it can be a run's start or end time: microseconds since the Unix epoch, 0 for "now".
    Never negative: a run's duration is its end minus its start, which two times of any sign can take
    past the int64 the wire carries (a start of -2**63 + 5 made the run impossible to end). Nor after
    year 9999, which no date holds: ``aetherctl runs list`` and ``runs get`` died printing such a start."""
    if not 0 <= value <= INT64_MAX:
        raise InvalidArgument(
            f"{what} {value} is not a time: give microseconds since the Unix epoch (>= 0), or 0 for now"
        )
    if value > LATEST_TIME_US:
        raise InvalidArgument(
            f"{what} {value} is after year 9999: give microseconds since the Unix epoch, at most "
            f"{LATEST_TIME_US}"
        )
    return value


def metric_time_problem(value: int) -> str | None:
    """Why ``value`` cannot be a metric point's timestamp (microseconds since the Unix epoch, within the
    years 1 to 9999 a date can name), or None."""
    if EARLIEST_TIME_US <= value <= LATEST_TIME_US:
        return None
    return (
        f"timestamp_us {value} is outside years 1 to 9999: give microseconds since the Unix epoch, from "
        f"{EARLIEST_TIME_US} to {LATEST_TIME_US}"
    )


def check_encodable(text: str, what: str) -> str:
    """``text`` when it can be encoded as UTF-8 (a lone surrogate, e.g. from ``os.fsdecode``, cannot) and
    stored: the control plane refuses text holding a NUL character (PostgreSQL cannot store it), and the
    SDK took it in a run's name and in parameter and tag values, so the server refused the run's whole
    batch share, its points or its start included, long after the call."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidArgument(
            f"{what} {text[:40]!r} is not valid Unicode text (character {error.start} cannot be encoded)"
        ) from None
    if "\x00" in text:
        raise InvalidArgument(
            f"{what} contains a NUL byte (0x00) at position {text.index(chr(0))}, which cannot be stored;"
            " remove it"
        )
    return text


def check_key(key: str, what: str) -> str:
    """``key`` when it can name a metric, parameter or tag: non-empty, at most 250 printable characters
    (a lone surrogate is not printable, so a valid key is also valid UTF-8)."""
    if not key or not key.strip():
        raise InvalidArgument(f"{what} name must not be empty")
    if len(key) > KEY_LENGTH:
        raise InvalidArgument(f"{what} name {key[:40]!r}... is longer than {KEY_LENGTH} characters")
    if not key.isprintable():
        raise InvalidArgument(f"{what} name {key!r} contains control characters")
    return key


def check_name(name: str, what: str) -> str:
    """``name`` when it can name an experiment or a run: non-empty, at most 128 characters."""
    if not name.strip():
        raise InvalidArgument(f"{what} name must not be empty")
    if len(name) > NAME_LENGTH:
        raise InvalidArgument(f"{what} name {name[:40]!r}... is longer than {NAME_LENGTH} characters")
    return check_encodable(name, f"{what} name")


def check_values(values: Mapping[str, str], what: str) -> dict[str, str]:
    """A copy of parameters or tags when every key passes :func:`check_key` and every value is text of
    at most 6,000 characters."""
    for key, value in values.items():
        check_key(key, what)
        if len(value) > PARAM_VALUE_LENGTH:
            raise InvalidArgument(f"{what} {key!r}: value is longer than {PARAM_VALUE_LENGTH} characters")
        check_encodable(value, f"{what} {key!r}: value")
    return dict(values)


def run_values_bytes(params: Mapping[str, str], tags: Mapping[str, str]) -> int:
    """The bytes ``params`` and ``tags`` take in a ``Run`` message: the sum of their map entries' sizes, so
    the SDK can add and take away entries as a run's values change (a tag overwritten)."""
    return pb.Run(params=params, tags=tags).ByteSize()


def check_run_values_bytes(run: str, size: int, params: int, tags: int) -> None:
    """INVALID_ARGUMENT naming ``run`` ("run 'a1b2...'") when its ``params`` parameters and ``tags`` tags
    take ``size`` bytes (:func:`run_values_bytes`), more than :data:`MAX_RUN_VALUES_BYTES`."""
    if size > MAX_RUN_VALUES_BYTES:
        raise InvalidArgument(
            f"{run}: its parameters and tags would take {size} bytes, over the limit of"
            f" {MAX_RUN_VALUES_BYTES} bytes per run ({params} parameters, {tags} tags); nothing was written"
        )


def check_run_values(run_id: str, params: Mapping[str, str], tags: Mapping[str, str]) -> None:
    """INVALID_ARGUMENT when a run's parameters and tags (all of them: stored and new) take more than
    :data:`MAX_RUN_VALUES_BYTES` on the wire."""
    check_run_values_bytes(f"run {run_id!r}", run_values_bytes(params, tags), len(params), len(tags))
