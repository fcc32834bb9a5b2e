"""Argparse types of ``aetherctl deploy``'s traffic shares and canary policy, with the control plane's own
rules (control_plane/deployments/traffic.py, canary.py, messages.py). A NaN, negative or oversized share,
or steps the canary cannot follow, went to the server as typed and came back INVALID_ARGUMENT (exit 1)
naming a proto field (``traffic_percent``, ``canary steps``) rather than the flag; these refuse them as a
usage error naming the flag (exit 2) before any call, ``canary start`` included, which read the
deployment before it looked at its flags. Stdlib only (and clients.serving_rules, which imports nothing
at its top): every command's start imports this module."""

from __future__ import annotations

import argparse
import itertools
import math

from clients.serving_rules import share_problem

#: The longest canary bake the control plane takes (``control_plane.deployments.canary.MAX_BAKE_SECONDS``,
#: ten years; a unit test keeps the two equal: the canary module imports grpc, too slow for a start).
MAX_BAKE_SECONDS = 10 * 365 * 24 * 3600

PERCENT = "a percentage from 0 to 100"
STEPS = (
    "percentages separated by commas, ascending strictly within (0, 100] and ending at 100 (e.g. 5,25,100)"
)


def traffic_share(text: str) -> float:
    """``deploy traffic``'s PERCENT."""
    value = _number(text)
    if not (math.isfinite(value) and 0.0 <= value <= 100.0):
        raise argparse.ArgumentTypeError(f"expected {PERCENT}, got {text!r}")
    problem = share_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{value:g}% is {problem}")
    return value


def canary_steps(text: str) -> list[float]:
    """``--steps``: the canary's traffic at each step. Empty: none given (the server's defaults)."""
    if not text:
        return []
    steps = [_number(part) for part in text.split(",")]
    ascending = all(earlier < later for earlier, later in itertools.pairwise(steps))
    within = all(math.isfinite(step) and 0.0 < step <= 100.0 for step in steps)
    if not (within and ascending and steps[-1] == 100.0):
        raise argparse.ArgumentTypeError(f"expected {STEPS}, got {text!r}")
    if steps[0] >= 100.0:
        raise argparse.ArgumentTypeError(
            f"steps need one below 100 (where a canary starts; 100 is its promotion), got {text!r}"
        )
    for step in steps:
        problem = share_problem(step)
        if problem is not None:
            raise argparse.ArgumentTypeError(f"step {step:g}% is {problem}")
    return steps


def fraction(text: str) -> float:
    """``--max-error-rate``: a fraction of requests, from 0 to 1."""
    value = _number(text)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise argparse.ArgumentTypeError(f"expected a fraction from 0 to 1, got {text!r}")
    return value


def non_negative(text: str) -> float:
    """``--max-p99-ms``, ``--max-p99-ratio``: a finite number, 0 or more (0: no such ceiling)."""
    value = _number(text)
    if not (math.isfinite(value) and value >= 0.0):
        raise argparse.ArgumentTypeError(f"expected a finite number, 0 or more, got {text!r}")
    return value


def feature_defaults(text: str) -> list[float]:
    """``--feature-defaults``: one finite number per input column (a missing feature's value)."""
    values = [_number(part) for part in text.split(",")] if text else []
    if not all(math.isfinite(value) for value in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers separated by commas, got {text!r}")
    return values


def _number(text: str) -> float:
    """``text`` as a float; NaN (refused by every check above) when it is none."""
    try:
        return float(text)
    except ValueError:
        return math.nan
