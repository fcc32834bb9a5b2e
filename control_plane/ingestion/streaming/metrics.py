"""Prometheus metrics of a stream materializer, on their own registry (one per materializer, so tests
can run several in one process), optionally served over HTTP."""

from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from control_plane.ingestion.streaming.lateness import moment, span
from control_plane.ingestion.streaming.source import IdsAhead, Lag

_log = logging.getLogger("aether.ingestion.stream")
#: How often the alert of a stream whose ids run ahead of the clock is logged again while it lasts (it
#: lasts until the clock gets there, maybe years: once per lag check would flood the log).
IDS_AHEAD_REPEAT_S = 600.0


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
        self.ids_ahead_seconds = Gauge(
            "aether_stream_ids_ahead_seconds",
            "How far the stream's last id is ahead of the materializer's clock, when past the skew allowed"
            " (Redis streams; 0 otherwise): every entry added is quarantined as ahead until the clock gets"
            " there",
            ["view"],
            registry=self.registry,
        )
        self.ids_exhausted = Gauge(
            "aether_stream_ids_exhausted",
            "1 while the stream's last id is the greatest Redis allows (Redis streams; 0 otherwise): Redis"
            " refuses every entry added to it, for good",
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
        self._ids_ahead_alerted_at: float | None = None  # monotonic time of the last alert, while it lasts
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
        self._observe_ids_ahead(lag.ids_ahead)

    def _observe_ids_ahead(self, ahead: IdsAhead | None) -> None:
        """The gauge, and an alert when it starts and every ``IDS_AHEAD_REPEAT_S`` while it lasts, saying
        by how much, until when, and what mends it; one line when it ends."""
        self.ids_ahead_seconds.labels(self.view).set(0.0 if ahead is None else ahead.ahead_ms / 1000)
        self.ids_exhausted.labels(self.view).set(1.0 if ahead is not None and ahead.exhausted else 0.0)
        if ahead is None:
            if self._ids_ahead_alerted_at is not None:
                _log.warning("stream ids of view %s no longer ahead of the clock", self.view)
            self._ids_ahead_alerted_at = None
            return
        now = time.monotonic()
        if self._ids_ahead_alerted_at is not None and now - self._ids_ahead_alerted_at < IDS_AHEAD_REPEAT_S:
            return
        self._ids_ahead_alerted_at = now
        if ahead.exhausted:
            _log.warning(
                "ALERT stream %s of view %s: its last id %s is the greatest Redis allows, so Redis refuses"
                " every XADD to it, `*` included (ERR The stream has exhausted the last possible ID), for"
                " good: the producers' entries are not added, and the materializer, which receives none,"
                " cannot count them. Only the producers mend it: have them stop setting explicit ids (and"
                " XSETID), and write to a new stream (the view's source, or --stream)",
                ahead.stream, self.view, ahead.last_id,
            )  # fmt: skip
            return
        reaches_us = (ahead.clock_ms + ahead.ahead_ms - ahead.skew_s * 1000) * 1000
        _log.warning(
            "ALERT stream %s of view %s: its last id %s is %s ahead of the materializer's clock (%s), past"
            " the %d s allowed (--max-future-skew-s). Redis gives every `*` entry an id after it, so every"
            " entry added is quarantined as ahead until %s. Only the producers mend it: have them stop"
            " setting explicit ids, and write to a new stream (the view's source, or --stream); or wait"
            " until then. The entries refused meanwhile are in `aetherctl quarantine list`",
            ahead.stream, self.view, ahead.last_id, span(ahead.ahead_ms * 1000),
            moment(ahead.clock_ms * 1000), ahead.skew_s, moment(reaches_us),
        )  # fmt: skip
