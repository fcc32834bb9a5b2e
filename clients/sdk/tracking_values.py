"""What the tracking SDK takes from a training loop, checked at the call: metric names and values, steps,
parameters and tags. Checked here, not only by the server: the server refuses a run's whole batch, long
after the call, and with it the run's start when that batch holds it."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import SupportsFloat

from clients.errors import InvalidArgument
from clients.tracking_rules import check_int64, check_key, check_values

#: Bound on the metric names a client remembers as checked (beyond it, new names are checked each call).
_MAX_KNOWN_KEYS = 10_000


def checked_metrics(
    metrics: Mapping[str, SupportsFloat], known_keys: set[str] | None = None
) -> dict[str, float]:
    """A copy with float values; INVALID_ARGUMENT naming the metric for a name the server refuses (empty,
    too long, control characters) or a value that is not a finite number (checked here so the training
    loop hears of it at once: the server would refuse the run's whole batch, long after this call).
    Names found valid are added to ``known_keys`` and not checked again (a loop logs the same few)."""
    if known_keys is None or not known_keys.issuperset(metrics):
        for key in metrics:
            if not isinstance(key, str) or not key.strip():
                raise InvalidArgument(f"metric name must be a non-empty string, got {key!r}")
            check_key(key, "metric")
        if known_keys is not None and len(known_keys) < _MAX_KNOWN_KEYS:
            known_keys.update(metrics)
    # A Python float as it is; anything else (an int, a numpy scalar, a 0-d tensor) looked at.
    checked = {
        key: value if type(value) is float else _metric_value(key, value) for key, value in metrics.items()
    }
    # One test for all values: any NaN or infinity makes the sum non-finite, and a sum of finite values
    # is finite unless it overflows. Only then are the values looked at one by one.
    if not math.isfinite(sum(checked.values())):
        for key, number in checked.items():
            if not math.isfinite(number):
                raise InvalidArgument(f"metric {key!r}: value {number!r} is not a finite number")
    return checked


def step_of(step: object) -> int:
    """``step`` as the int64 it is sent as; INVALID_ARGUMENT for a number with a fractional part (or NaN,
    infinity): int() truncated it, so steps 0.5 and 0.9 were both stored as step 0 without a word, and
    NaN escaped as a bare ValueError. A whole number of any numeric type (2.0, numpy's) is taken, and
    whatever else int() takes, as before; what it refuses (None, "abc") is INVALID_ARGUMENT too."""
    if isinstance(step, numbers.Real) and not isinstance(step, numbers.Integral):
        number = float(step)
        if not number.is_integer():
            raise InvalidArgument(f"step {number!r} is not a whole number: steps are 64-bit integers")
    try:
        whole = int(step)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        shown = repr(step)
        shown = (
            shown if len(shown) <= _SHOWN_CHARS else f"{shown[:_SHOWN_CHARS]}... ({len(shown)} characters)"
        )
        raise InvalidArgument(f"step {shown} is not a whole number: steps are 64-bit integers") from None
    return check_int64(whole, "step")


#: The most characters of a refused value's repr an error shows.
_SHOWN_CHARS = 80


def _metric_value(key: str, value: object) -> float:
    """``value`` as a float, or INVALID_ARGUMENT naming the metric and showing (the start of) the value.
    A numpy scalar, a 0-d array or a 0-d torch tensor (``log_metric("loss", loss)``) is the number it
    holds, read with ``item()``: float() of a tensor that needs grad made torch warn. An array or tensor
    of any other shape is refused, a one-element one too (float() took a torch one as its number), and so
    is a complex number (float() of a numpy one dropped its imaginary part with only a warning, and of a
    torch one raised RuntimeError)."""
    shape, item = getattr(value, "shape", None), getattr(value, "item", None)
    if isinstance(shape, tuple) and callable(item):  # numpy's and torch's (a Size is a tuple)
        if shape:
            size = math.prod(shape)
            raise InvalidArgument(
                f"metric {key!r}: a {type(value).__name__} of shape {tuple(shape)} holds {size:,}"
                f" value{'' if size == 1 else 's'}, not one number: log one (loss.item(), losses.mean())"
            )
        value = item()
    if isinstance(value, complex):
        raise InvalidArgument(f"metric {key!r}: value {_shown(value)} is complex, not a real number")
    try:
        return float(value)  # type: ignore[arg-type]  # whatever float() takes is accepted, as before
    except (TypeError, ValueError, OverflowError):
        pass
    raise InvalidArgument(f"metric {key!r}: value {_shown(value)} is not a finite number")


def _shown(value: object) -> str:
    """(The start of) ``value``'s repr, for an error message."""
    if isinstance(value, int) and value.bit_length() > 256:
        return f"<int of {value.bit_length()} bits>"  # its repr may be refused (int_max_str_digits)
    shown = repr(value)
    return shown if len(shown) <= _SHOWN_CHARS else f"{shown[:_SHOWN_CHARS]}... ({len(shown)} characters)"


def text_map(values: Mapping[str, object] | None, what: str) -> dict[str, str]:
    """Parameters or tags as the strings they are stored as; INVALID_ARGUMENT naming the key for a key or
    value the server refuses (checked here: the server would refuse the run's whole batch, and with it
    the run's start when that batch holds it)."""
    return check_values({str(key): str(value) for key, value in (values or {}).items()}, what)
