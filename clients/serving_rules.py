"""Rules for serving settings and requests that both planes apply, in one place: the control plane when a
deployment is created or changed, the data plane when it reads a spec (its static ``--model-config``, or
a plan from a control plane that predates a rule) and when a request arrives."""

from __future__ import annotations

#: The most warm-up requests a model version may run before it reports READY. Each is a full run of the
#: model, so far fewer are ever useful; without a bound, 2**31 - 1 kept a version loading for good (and,
#: while warm-up requests were built all at once, grew the data plane's memory without limit).
MAX_WARMUP_REQUESTS = 10_000

#: Buckets the data plane's router hashes routing keys into (``kernels.hashing.BUCKETS``; clients imports
#: nothing of ours, so a unit test keeps the two equal). A live variant serves whole buckets and a shadow
#: mirrors whole buckets, so a share is served to a precision of one bucket.
ROUTING_BUCKETS = 10_000

#: The smallest positive traffic share, in percent: one bucket. A share under it got no bucket at all, so
#: a canary there answered nothing and the canary controller waited for its requests for ever.
MIN_TRAFFIC_PERCENT = 100.0 / ROUTING_BUCKETS


def share_problem(percent: float) -> str | None:
    """Why a positive share ``percent`` (already known to lie in [0, 100]) cannot be served ("below the
    minimum ..."), or None; 0 means no traffic at all and is fine. The one rule for the control plane and
    ``aetherctl``."""
    if 0.0 < percent < MIN_TRAFFIC_PERCENT:
        return (
            f"below the minimum of {MIN_TRAFFIC_PERCENT:g}% (one of the router's"
            f" {ROUTING_BUCKETS:,} buckets): a smaller share gets no requests at all (0 means none)"
        )
    return None


#: The longest request id a prediction may carry: the width of the control plane's prediction index and
#: feedback columns, which join a delayed label to the prediction it is for.
REQUEST_ID_LENGTH = 128


def request_id_problem(request_id: str) -> str | None:
    """Why ``request_id`` cannot name a prediction, or None. The one rule for both planes: Predict refuses
    such an id (answered OK, its prediction-log entry was then skipped whole by the monitor, features
    included, and feedback for it was refused), and the monitor and feedback keep to the same width. NUL
    is refused because no metadata database stores it in text."""
    if not request_id:
        return "request_id must not be empty"
    if len(request_id) > REQUEST_ID_LENGTH:
        return f"request_id has {len(request_id)} characters; at most {REQUEST_ID_LENGTH} are allowed"
    if "\x00" in request_id:
        return f"request_id holds a NUL character (0x00) at position {request_id.index(chr(0))}"
    return None


def default_problem(value: float, dtype: str) -> str | None:
    """None when a finite feature default ``value`` can be fed to an input of numpy dtype ``dtype`` as it
    is, else what such an input holds ("whole numbers from 0 to 255"). The one rule for both planes: a
    default fills a missing feature cast to the input's dtype, and numpy's cast truncates 2.5 to 2 for an
    integer input and makes any non-zero value True for a bool one without a word, raises (OverflowError:
    INTERNAL) for a whole number a narrow integer cannot hold, and makes a finite number too large for a
    float16 or float32 input infinite. An unknown dtype (the model's own check names it) or a float64 one
    takes any finite value."""
    # Imported here: aetherctl imports this module for its share rule, and numpy would cost every command's
    # start (tests/unit/cli/test_startup_imports.py keeps it out).
    import numpy as np

    try:
        kind = np.dtype(dtype)
    except TypeError:
        return None
    if kind.kind in "iub":
        low, high = (0, 1) if kind.kind == "b" else (int(np.iinfo(kind).min), int(np.iinfo(kind).max))
        # ``< high + 1``: 2**63 - 1 is 2.0**63 as a float, so ``<= high`` would let 2**63 through.
        if not (low <= value < float(high + 1) and float(value).is_integer()):
            return f"whole numbers from {low} to {high}"
        return None
    if kind.kind == "f" and kind.itemsize < 8:
        limit = float(np.finfo(kind).max)
        if abs(value) > limit:
            return f"finite values from {-limit:g} to {limit:g}"
    return None
