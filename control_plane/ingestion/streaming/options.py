"""The stream materializer's settings, and the counts of what it processed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from clients.join_key_limit import DEFAULT_MAX_JOIN_KEY_BYTES
from control_plane.ingestion.validation import DEFAULT_MAX_FUTURE


@dataclass(frozen=True)
class MaterializerOptions:
    group: str = "materializer"
    count: int = 2000
    block_ms: int = 200
    reclaim_idle_ms: int = 30_000
    reclaim_every_s: float = 1.0
    lateness_s: int = 3600
    max_future: timedelta = DEFAULT_MAX_FUTURE
    lag_alert_seconds: float = 60.0
    lag_every_s: float = 1.0
    metrics_port: int | None = None
    # Committed batches wait in the outbox until this many have gathered, this long has passed, or a
    # read comes back empty; then they go to the offline store and SQL together (see outbox.py).
    drain_every: int = 8
    drain_interval_s: float = 1.0
    # How often the applied / rejected id sets are trimmed (see materializer.py's module docstring).
    trim_every_s: float = 10.0
    # How often the materializer looks whether its view version was deleted or retired, busy or idle: an
    # idle one commits nothing, and so kept running (its outbox undrained) until its next message, maybe
    # never. A busy one also reads the status in every commit, holding the version row until the batch is
    # committed (``commit_gate.py``): no batch is committed after a retire's or delete's SQL transaction
    # (before, a batch committed less than this after a retire was stored and counted).
    status_every_s: float = 1.0
    # How often the validation rules of the view version are read again: they are edited in place
    # (UpdateValidation), and a running materializer kept those it started with (rule_refresh.py).
    rules_every_s: float = 10.0
    # The longest string join key accepted, in bytes of UTF-8 (``key_length``; the process's
    # ``ControlPlaneSettings.max_join_key_bytes``, AETHER_MAX_JOIN_KEY_BYTES): as for batch ingestion.
    max_join_key_bytes: int = DEFAULT_MAX_JOIN_KEY_BYTES


@dataclass
class BatchStats:
    received: int = 0
    accepted: int = 0
    quarantined: int = 0
    duplicates: int = 0
