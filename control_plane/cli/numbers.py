"""Argparse types of whole-number flags that travel in unsigned proto fields. A negative or oversized
value there fails deep in protobuf ("Value out of range: -1", a traceback); these refuse it as a usage
error that names the flag (exit 2) before the command starts."""

from __future__ import annotations

import argparse


def uint32(text: str) -> int:
    """Limits, versions and small counts (proto ``uint32``)."""
    return _whole(text, 2**32 - 1)


def uint64(text: str) -> int:
    """IDs and row counts (proto ``uint64``), up to the largest that SQL's signed 64-bit integers hold."""
    return _whole(text, 2**63 - 1)


def _whole(text: str, maximum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= maximum:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to {maximum}, got {text!r}")
    return value
