"""The hash chain: the canonical form of an audit entry and its hash.

An entry's hash is ``sha256`` over the canonical JSON (sorted keys, no whitespace, UTF-8) of its fields
and the previous entry's hash, so changing any field of any entry, or removing or inserting an entry,
breaks every link after it. ``outcome`` (why an operation was refused) is one of those fields only when
it is not empty: an entry of a change carried out hashes exactly as it did before refusals were logged,
so chains written then still verify, and adding, removing or editing an outcome changes the hash.
Values are normalized to plain JSON before they are hashed *and* stored, so what is read back hashes to
the same digest on SQLite and PostgreSQL alike."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: ``prev_hash`` of the first entry.
GENESIS_HASH = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    timestamp_us: int
    actor: str
    action: str
    object_type: str
    object_id: str
    before: Any
    after: Any
    prev_hash: str
    hash: str
    #: "" when the operation was carried out; "refused: <gRPC status name>: <message>" when it was not.
    outcome: str = ""
    #: Non-empty when the stored row could not be decoded (``before``/``after`` not valid JSON): what is
    #: wrong. Not stored and not hashed: it describes a row altered outside the control plane, so that
    #: one bad row is shown as damaged instead of making the whole log unreadable.
    damaged: str = ""

    def to_json(self) -> dict[str, Any]:
        """The stored fields as one JSON object (the export format; ``damaged`` is not one of them, and
        ``outcome`` is there only when not empty, as in the hash)."""
        fields: dict[str, Any] = {
            "seq": self.seq,
            "timestamp_us": self.timestamp_us,
            "actor": self.actor,
            "action": self.action,
            "object_type": self.object_type,
            "object_id": self.object_id,
            "before": self.before,
            "after": self.after,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }
        if self.outcome:
            fields["outcome"] = self.outcome
        return fields


def normalize(value: Any) -> Any:
    """``value`` as plain JSON data: mappings with string keys, lists, strings, finite numbers, booleans
    and null. Non-finite floats become the strings "NaN", "Infinity", "-Infinity" (JSON has no literal
    for them and PostgreSQL rejects them); anything else not JSON becomes its ``str``."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else json.dumps(value)
    if isinstance(value, Mapping):
        return {str(key): normalize(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [normalize(item) for item in value]
    return str(value)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def entry_hash(
    *,
    seq: int,
    timestamp_us: int,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    before: Any,
    after: Any,
    prev_hash: str,
    outcome: str = "",
) -> str:
    """The hash of one entry; ``before`` and ``after`` must already be normalized. An empty ``outcome``
    is left out of the hashed fields (see the module docstring)."""
    fields: dict[str, Any] = {
        "seq": seq,
        "timestamp_us": timestamp_us,
        "actor": actor,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "before": before,
        "after": after,
        "prev_hash": prev_hash,
    }
    if outcome:
        fields["outcome"] = outcome
    return hashlib.sha256(canonical_json(fields).encode("utf-8")).hexdigest()


def expected_hash(entry: AuditEntry) -> str:
    """What ``entry.hash`` must be given its other fields."""
    return entry_hash(
        seq=entry.seq,
        timestamp_us=entry.timestamp_us,
        actor=entry.actor,
        action=entry.action,
        object_type=entry.object_type,
        object_id=entry.object_id,
        before=entry.before,
        after=entry.after,
        prev_hash=entry.prev_hash,
        outcome=entry.outcome,
    )
