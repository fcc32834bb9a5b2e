"""The argparse type of ``--tag KEY=VALUE`` filters. Parsed where each command used to split the text
itself, ``models list`` skipped a tag without ``=`` and so listed every model as if unfiltered; as a
type, a malformed tag is a usage error naming the flag (exit 2) before any call."""

from __future__ import annotations

import argparse


def key_value(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` as ``(KEY, VALUE)``: the key must not be empty, the value may be (``team=``)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value
