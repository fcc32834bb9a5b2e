"""Prediction-log entries as the canary controller reads them (:mod:`.observations` reads the stream): what
one entry says (its variant, its outcome, its latency), the per-variant tallies they add up to, and the
data plane's gap markers.

Every entry counts as a request of its variant, and each failure falls in one of two classes. A failure
on the server's side is an error of the variant's (the canary's error rate is errors / requests):
UNAVAILABLE, INTERNAL, UNKNOWN, DATA_LOSS, RESOURCE_EXHAUSTED, FAILED_PRECONDITION (the version does not
fit its stored data or its serving config), DEADLINE_EXCEEDED (the server dropped the request at its
deadline), and a failed entry with no or an unknown code. A failure whose ``error_code`` is one of
:data:`CALLER_ERROR_CODES` (INVALID_ARGUMENT, NOT_FOUND -- e.g. an entity with no stored features --,
OUT_OF_RANGE, ALREADY_EXISTS, PERMISSION_DENIED, UNAUTHENTICATED, and CANCELLED: the caller went away) is
a refusal as the caller's mistake: no error by itself, but counted per variant all the same
(``caller_errors``, with the codes seen). It used to be dropped, on the reasoning that every variant
answers a caller's mistake alike; a new version refuses requests its primary answers, though, with these
very codes: it reads a request-time feature the callers do not send yet ("row 0 has no request-time
feature 'hour'": INVALID_ARGUMENT), or a feature view version registered but not yet filled (NOT_FOUND);
features that do not match its input width were INVALID_ARGUMENT too (FAILED_PRECONDITION now, an error of its
own). Such a canary showed 0 % errors and was promoted, and then every request failed. So the controller
compares the two variants' refusal rates in the same window (``canary.decide``): a caller's real mistakes
reach both alike and cancel out, a version's own refusals do not. Without ``ok``, an empty or ``OK``
``error_code`` means success.

RESOURCE_EXHAUSTED stays a server error though a caller sending too many rows gets it too: the data plane
answers it both for the variant's own overload (its model's queue is full: load shedding) and for a
request over a limit (too many rows or features, an answer too large for one message), and the log
carries only the status name, not which. Counted with the compared class, a canary shedding load while
its primary shed some too would not be rolled back. A caller who sends too many rows gets it from every
variant, so it can roll back a healthy canary when such requests exceed ``max_error_rate`` of its
traffic; raise the policy's rate, or fix the caller, where that happens.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from control_plane.deployments.canary import Observation

#: gRPC status names of requests refused as the caller's mistake (or that the caller gave up on): never the
#: variant's errors by themselves, but counted per variant as ``caller_errors`` and compared between the
#: canary and the primary (see the module doc: a new version can refuse with these what its primary
#: answers). Not RESOURCE_EXHAUSTED: the log cannot tell a full queue (the variant's fault) from too many
#: rows. Not FAILED_PRECONDITION: on the data plane's request path it says the served version does not fit
#: its data or config (a stored value its integer input cannot hold, feature defaults of the wrong length),
#: which is the version's fault, and a canary failing so must be rolled back.
CALLER_ERROR_CODES = frozenset(
    {
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "OUT_OF_RANGE",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "CANCELLED",
    }
)

#: The ``role`` of the data plane's gap markers (``data_plane.prediction_log.GAP``).
GAP_ROLE = "gap"
_EDGES = np.geomspace(0.01, 120_000.0, 420)  # ms: from 10 µs to two minutes


@dataclass
class VariantTally:
    requests: int = 0
    errors: int = 0
    #: Requests refused as the caller's mistake (a code of :data:`CALLER_ERROR_CODES`), per code.
    caller_codes: dict[str, int] = field(default_factory=dict)
    latency_counts: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(len(_EDGES) + 1, np.int64))
    #: Stream time (microseconds, from the entry id) of the newest entry counted; None before the first.
    newest_us: int | None = None
    #: Stream time of the oldest entry counted (the first read); None before the first.
    oldest_us: int | None = None

    def add(self, failed: bool, latency_ms: float, caller_code: str = "") -> None:
        """Counts one request; ``failed``: it failed on the server's side (see :func:`server_failed`);
        ``caller_code``: the code it was refused with as the caller's mistake ("" when it was not; see
        :func:`caller_refusal`)."""
        self.requests += 1
        if failed:
            self.errors += 1
        elif caller_code:
            self.caller_codes[caller_code] = self.caller_codes.get(caller_code, 0) + 1
        if math.isfinite(latency_ms):
            self.latency_counts[int(np.searchsorted(_EDGES, latency_ms))] += 1

    def p99_ms(self) -> float | None:
        return self._latency_at_rank(math.ceil(0.99 * int(self.latency_counts.sum())))

    def second_slowest_ms(self) -> float | None:
        """The second-slowest request's latency (None with fewer than two): below 100 requests the p99
        is the slowest one alone, and the canary's latency rules judge no more than this (see
        :func:`~control_plane.deployments.canary.judged_p99_ms`)."""
        total = int(self.latency_counts.sum())
        return self._latency_at_rank(total - 1) if total >= 2 else None

    def _latency_at_rank(self, rank: int) -> float | None:
        """The latency of the ``rank``-th fastest request (from 1), None for no such request."""
        if not 1 <= rank <= int(self.latency_counts.sum()):
            return None
        index = int(np.searchsorted(np.cumsum(self.latency_counts), rank))
        return float(_EDGES[min(index, len(_EDGES) - 1)])  # the bin's upper edge: never optimistic

    @property
    def caller_errors(self) -> int:
        return sum(self.caller_codes.values())

    def observation(self) -> Observation:
        codes = tuple(sorted(self.caller_codes, key=lambda code: (-self.caller_codes[code], code)))
        return Observation(
            self.requests, self.errors, self.p99_ms(), self.caller_errors, codes, self.second_slowest_ms()
        )


def _text(fields: Mapping[bytes, bytes], name: bytes) -> str:
    # Replacing what is not UTF-8 rather than raising: an entry the reader raised on would stop its window
    # at that entry for good (the cursor moves only past entries read), and a mangled name matches no
    # deployment or variant, so the entry is skipped or counted as what it says it is.
    value = fields.get(name)
    return value.decode(errors="replace") if value is not None else ""


class ParsedEntry(NamedTuple):
    deployment: str
    variant: str
    failed: bool  # on the server's side: an error of the variant's (see server_failed)
    latency_ms: float
    #: The code of a refusal as the caller's mistake ("": none; see caller_refusal).
    caller_code: str = ""


def server_failed(ok: str, error_code: str) -> bool:
    """Whether an entry with these ``ok`` and ``error_code`` fields is a failure on the server's side: it
    failed (``ok`` is not ``"1"``; without ``ok``, ``error_code`` is neither empty nor ``OK``) and its code
    is not one of :data:`CALLER_ERROR_CODES`."""
    code = error_code.strip().upper()
    if ok:
        if ok in ("1", "true"):
            return False
    elif code in ("", "OK"):
        return False
    return code not in CALLER_ERROR_CODES


def caller_refusal(ok: str, error_code: str) -> str:
    """The code of an entry refused as the caller's mistake: it failed and its code is one of
    :data:`CALLER_ERROR_CODES`; "" for any other entry (answered, or failed on the server's side)."""
    code = error_code.strip().upper()
    if ok in ("1", "true") or code not in CALLER_ERROR_CODES:
        return ""
    return code


def parse_entry(fields: Mapping[bytes, bytes]) -> ParsedEntry | None:
    """(deployment, variant, failed, latency_ms, caller_code) of one prediction-log entry; None for a
    shadow's entry, a gap marker (see :func:`parse_gap`) or one without a deployment."""
    if _text(fields, b"role") in ("shadow", GAP_ROLE) or _text(fields, b"shadow") in ("1", "true"):
        return None
    deployment = _text(fields, b"deployment")
    if not deployment:
        return None
    ok, error_code = _text(fields, b"ok"), _text(fields, b"error_code")
    failed = server_failed(ok, error_code)
    try:
        latency = float(_text(fields, b"latency_ms") or "nan")
    except ValueError:
        latency = math.nan
    return ParsedEntry(deployment, _text(fields, b"variant"), failed, latency, caller_refusal(ok, error_code))


def logged_version(fields: Mapping[bytes, bytes]) -> tuple[str, int | None]:
    """The model and version an entry says served its request ("" and None where it does not say: an
    entry the observer then takes as its variant's, there being nothing to tell it apart by)."""
    return _text(fields, b"model"), _int(fields, b"version")


class Gap(NamedTuple):
    deployment: str
    dropped: int  # 0 when the marker does not say (still a gap)
    first_ts_us: int | None
    last_ts_us: int | None

    def describe(self) -> str:
        span = ""
        if self.first_ts_us is not None and self.last_ts_us is not None:
            span = f" between {_clock(self.first_ts_us)} and {_clock(self.last_ts_us)}"
        count = f"{self.dropped} requests" if self.dropped else "requests"
        return f"the data plane could not log {count} of the deployment{span}"


def _int(fields: Mapping[bytes, bytes], name: bytes) -> int | None:
    try:
        return int(_text(fields, name))
    except ValueError:
        return None


def parse_gap(fields: Mapping[bytes, bytes]) -> Gap | None:
    """The data plane's gap marker in one entry (``role`` = ``gap``), or None for any other entry. A
    marker whose numbers do not parse is still a gap: entries were lost, whatever their count."""
    if _text(fields, b"role") != GAP_ROLE:
        return None
    first, last = _int(fields, b"first_ts_us"), _int(fields, b"last_ts_us")
    return Gap(_text(fields, b"deployment"), max(_int(fields, b"dropped") or 0, 0), first, last)


def _clock(ts_us: int) -> str:
    try:
        return datetime.fromtimestamp(ts_us / 1e6, UTC).strftime("%H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return f"ts_us {ts_us}"
