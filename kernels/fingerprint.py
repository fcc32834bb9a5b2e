"""Stable schema fingerprints: the same schema gives the same 64-bit number in every process, on every
machine and in every Python version (no ``hash()``, which is salted per process)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence


def schema_fingerprint(view: str, version: int, columns: Sequence[tuple[str, str]]) -> int:
    """Fingerprint of one feature-view version's value layout: its name, version and the ordered
    (feature name, numpy dtype name) pairs. Written into every online blob and checked on every read, so
    bytes written for another schema are reported, never decoded as garbage."""
    canonical = json.dumps(
        [view, int(version), [[name, dtype] for name, dtype in columns]], separators=(",", ":")
    )
    digest = hashlib.sha256(canonical.encode()).digest()
    return int.from_bytes(digest[:8], "little")
