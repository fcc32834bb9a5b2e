"""Settings of the monitor loop, read once from ``AETHER_*`` environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from clients.env_values import env_float, env_listen_address

DEFAULT_STREAM = "aether:predictions"  # the data plane's default AETHER_PREDICTION_LOG_STREAM


@dataclass(frozen=True)
class MonitoringSettings:
    #: Seconds between reads of the prediction log.
    interval_s: float = 2.0
    stream: str = DEFAULT_STREAM
    #: Consumer group and consumer name on the stream. Run one monitor per stream: two consumers of one
    #: group would each see part of every deployment's traffic.
    group: str = "aether-monitor"
    consumer: str = "monitor"
    #: Entries per XREADGROUP, and at most per tick (the rest is read on the next tick).
    read_batch: int = 1000
    max_read_per_tick: int = 50_000
    #: Alerts go here when a deployment's config names no webhook ("" = log only).
    webhook_url: str = ""
    webhook_timeout_s: float = 5.0
    #: A time window closes this long after its end when no later row arrived.
    time_window_grace_s: float = 5.0
    #: A version whose windows got no row for this long (it stopped serving) has its open window
    #: reported as it is and its entries acknowledged, and is then forgotten (see ``versions``).
    window_idle_s: float = 3600.0
    #: How often quality windows are checked for degradation, and how far back (labels arrive late).
    performance_interval_s: float = 30.0
    label_horizon_s: float = 7 * 24 * 3600.0
    #: Prediction-index rows older than this are pruned (labels arriving later stay orphaned), and so are
    #: orphaned labels first recorded before it (counted in ``aether_feedback_orphans_expired``).
    index_retention_s: float = 30 * 24 * 3600.0
    #: Joined labels recorded this long ago whose predictions have all left the index are deleted: no
    #: reader can join them any more, and a re-send within it still counts as joined. The horizon is
    #: never later than the index retention's.
    joined_label_retention_s: float = 30 * 24 * 3600.0
    #: How often that retention is applied.
    prune_interval_s: float = 3600.0
    #: ``HOST:PORT`` to serve the Prometheus gauges on ("" = not served by the monitor).
    metrics_addr: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MonitoringSettings:
        """``AETHER_MONITOR_INTERVAL_S``, ``AETHER_PREDICTION_LOG_STREAM``, ``AETHER_MONITOR_WEBHOOK_URL``,
        ``AETHER_MONITOR_PERFORMANCE_INTERVAL_S``, ``AETHER_MONITOR_LABEL_HORIZON_S``,
        ``AETHER_MONITOR_INDEX_RETENTION_S``, ``AETHER_MONITOR_JOINED_LABEL_RETENTION_S``,
        ``AETHER_MONITOR_WINDOW_IDLE_S`` and
        ``AETHER_MONITOR_METRICS_ADDR``."""
        env = os.environ if env is None else env
        defaults = cls()

        def number(name: str, default: float) -> float:
            # Finite and above 0: a negative interval made the loop spin a full core; a typo was a traceback.
            return env_float(env, name, default, above=0.0)

        return cls(
            interval_s=number("AETHER_MONITOR_INTERVAL_S", defaults.interval_s),
            stream=env.get("AETHER_PREDICTION_LOG_STREAM") or defaults.stream,
            webhook_url=env.get("AETHER_MONITOR_WEBHOOK_URL") or defaults.webhook_url,
            performance_interval_s=number(
                "AETHER_MONITOR_PERFORMANCE_INTERVAL_S", defaults.performance_interval_s
            ),
            label_horizon_s=number("AETHER_MONITOR_LABEL_HORIZON_S", defaults.label_horizon_s),
            index_retention_s=number("AETHER_MONITOR_INDEX_RETENTION_S", defaults.index_retention_s),
            joined_label_retention_s=number(
                "AETHER_MONITOR_JOINED_LABEL_RETENTION_S", defaults.joined_label_retention_s
            ),
            window_idle_s=number("AETHER_MONITOR_WINDOW_IDLE_S", defaults.window_idle_s),
            metrics_addr=env_listen_address(env, "AETHER_MONITOR_METRICS_ADDR", defaults.metrics_addr),
        )
