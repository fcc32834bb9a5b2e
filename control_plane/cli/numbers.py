"""Argparse types of whole-number flags that travel in unsigned proto fields. A negative or oversized
value there fails deep in protobuf ("Value out of range: -1", a traceback); these refuse it as a usage
error that names the flag (exit 2) before the command starts."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def uint32(text: str) -> int:
    """Limits, versions and small counts (proto ``uint32``)."""
    return _whole(text, 2**32 - 1)


def uint64(text: str) -> int:
    """IDs and row counts (proto ``uint64``), up to the largest that SQL's signed 64-bit integers hold."""
    return _whole(text, 2**63 - 1)


def int32(text: str) -> int:
    """A count or size in a signed proto ``int32`` field that takes no negatives (serving settings, where
    0 means the default)."""
    return _whole(text, 2**31 - 1)


def version(text: str) -> int:
    """A model version named on the command line: versions start at 1, so 0 names none (where it is
    the proto's "not given", a command takes the argument's absence instead)."""
    return _whole(text, 2**63 - 1, minimum=1)


def view_version(text: str) -> int:
    """A feature-view version named on the command line (proto ``uint32``; versions start at 1)."""
    return _whole(text, 2**32 - 1, minimum=1)


#: The longest time limit a flag takes: one year. gRPC keeps a deadline in signed 64-bit nanoseconds: a
#: timeout past about 9.2e9 s (even 9e9 s) overflowed it into the past, and every call failed at once with
#: DEADLINE_EXCEEDED. A year is far past any call or build worth waiting for.
MAX_SECONDS = 365 * 24 * 3600


def positive_seconds(text: str) -> float:
    """A time limit in seconds (``--timeout``, ``--deadline``, the fleet's ``--interval-s``): a finite
    number above 0 and at most :data:`MAX_SECONDS`. Zero or less, or too large a value, failed every
    call with DEADLINE_EXCEEDED, which named neither the flag nor the mistake."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= MAX_SECONDS):
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds above 0 and at most {MAX_SECONDS} (one year), got {text!r}"
        )
    return value


def replicas(text: str) -> int:
    """A replica count (``aetherctl fleet run --min/--max``): at least one."""
    return _whole(text, 2**31 - 1, minimum=1)


def at_least_one(text: str) -> int:
    """A count of at least one (``aetherctl fleet run --hung-after-misses``)."""
    return _whole(text, 2**31 - 1, minimum=1)


def probe_seconds(text: str) -> float:
    """A health probe deadline (``aetherctl fleet run --health-timeout-s``): above 0 and at most 60 s,
    since each autoscaler pass waits for its slowest probe."""
    value = _finite(text)
    if not 0 < value <= 60:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0 and at most 60, got {text!r}")
    return value


def stall_seconds(text: str) -> float:
    """A stall threshold (``aetherctl fleet run --stalled-after-s``): a finite number of seconds above the
    data plane's heartbeat period, 0.5 s (at or below it, a loop that turns is taken for stalled between
    its stamps), as ``AETHER_REPLICA_STALLED_AFTER_S``."""
    value = _finite(text)
    if not value > 0.5:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0.5, got {text!r}")
    return value


def positive_number(text: str) -> float:
    """A target that must be a finite number above 0 (``--target-p99-ms``, ``--target-queue-per-replica``)."""
    value = _finite(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def window_seconds(text: str) -> float:
    """A stabilization window in seconds: a finite number, 0 or more (0: act on the first sample)."""
    value = _finite(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, 0 or more, got {text!r}")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def limit(text: str) -> int:
    """``--limit`` of a listing: at least one (a listing of none is a mistake, not a request), at most what
    a page-size field (proto ``int32``) holds; larger listings are fetched page by page."""
    return _whole(text, 2**31 - 1, minimum=1)


def whole(minimum: int, maximum: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``minimum`` to ``maximum``."""
    return lambda text: _whole(text, maximum, minimum)


def _whole(text: str, maximum: int, minimum: int = 0) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if not minimum <= value <= maximum:
        raise argparse.ArgumentTypeError(f"expected a whole number from {minimum} to {maximum}, got {text!r}")
    return value
