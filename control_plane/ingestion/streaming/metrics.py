"""Prometheus metrics of a stream materializer, on their own registry (one per materializer, so tests
can run several in one process), optionally served over HTTP."""

from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from control_plane.ingestion.streaming.source import Lag

_log = logging.getLogger("aether.ingestion.stream")


class MaterializerMetrics:
    def __init__(self, view: str, lag_alert_seconds: float, port: int | None = None) -> None:
        self.registry = CollectorRegistry()
        self.view = view
        self.lag_alert_seconds = lag_alert_seconds
        self.lag_messages = Gauge(
            "aether_stream_lag_messages",
            "Messages not yet delivered to the group",
            ["view"],
            registry=self.registry,
        )
        self.lag_seconds = Gauge(
            "aether_stream_lag_seconds",
            "Age of the oldest undelivered message",
            ["view"],
            registry=self.registry,
        )
        self.newest_value_age = Gauge(
            "aether_view_newest_value_age_seconds",
            "Now minus the event time of the newest value written online",
            ["view"],
            registry=self.registry,
        )
        self.records = Counter(
            "aether_stream_records",
            "Records processed, by outcome",
            ["view", "outcome"],
            registry=self.registry,
        )
        self.newest_event_us = 0
        self.alerting = False
        if port is not None:
            start_http_server(port, addr="127.0.0.1", registry=self.registry)

    def observe_batch(self, accepted: int, quarantined: int, duplicates: int, newest_event_us: int) -> None:
        self.records.labels(self.view, "accepted").inc(accepted)
        self.records.labels(self.view, "quarantined").inc(quarantined)
        self.records.labels(self.view, "duplicate").inc(duplicates)
        self.newest_event_us = max(self.newest_event_us, newest_event_us)

    def observe_lag(self, lag: Lag) -> None:
        self.lag_messages.labels(self.view).set(lag.messages)
        self.lag_seconds.labels(self.view).set(lag.seconds)
        if self.newest_event_us:
            self.newest_value_age.labels(self.view).set(time.time() - self.newest_event_us / 1e6)
        over = lag.seconds > self.lag_alert_seconds
        if over:
            _log.warning(
                "ALERT stream lag of view %s: %.1fs behind (%d messages), threshold %.1fs",
                self.view, lag.seconds, lag.messages, self.lag_alert_seconds,
            )  # fmt: skip
        elif self.alerting:
            _log.warning("stream lag of view %s back under %.1fs", self.view, self.lag_alert_seconds)
        self.alerting = over
