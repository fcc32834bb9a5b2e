"""Prometheus metrics of the serving path, exposed on an HTTP port (``/metrics``).

* ``aether_inference_requests_total{api,model,version,code}`` — requests answered, by gRPC status code;
* ``aether_inference_latency_seconds{api,model,version}`` — server-side latency histogram (OK requests);
* ``aether_inference_in_flight{api}`` — requests admitted and not yet answered (queued, fetching
  features or running): the autoscaler's queue depth;
* ``aether_inference_queue_depth{model,version}`` — requests waiting in a version's batcher;
* ``aether_inference_batch_size{model,version}`` — rows per executed batch;
* ``aether_model_state{model,version,state}`` — 1 for the state a version is in.

Each server owns its own registry (several servers may share a test process). What the request path pays
is kept small: labelled children are cached per label tuple (``labels()`` costs a few µs), and the gauges
(in flight, queue depth) are read from their owners when scraped instead of being set on every request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import make_server

import prometheus_client as prom
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

from data_plane.batching import BatchObserver
from data_plane.models.manager import ManagerObserver, ModelState

_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
    0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _BatchMetrics(BatchObserver):
    def __init__(self, batch_size: Any) -> None:
        self._batch_size = batch_size

    def batch_started(self, size: int, rows: int, queue_depth: int) -> None:
        self._batch_size.observe(rows)


@dataclass
class ServingMetrics(ManagerObserver):
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))

    def __post_init__(self) -> None:
        self._requests = prom.Counter(
            "aether_inference_requests", "Inference requests answered, by status code",
            ("api", "model", "version", "code"), registry=self.registry,
        )  # fmt: skip
        self._latency = prom.Histogram(
            "aether_inference_latency_seconds", "Server-side latency of successful inference requests",
            ("api", "model", "version"), buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self._in_flight = prom.Gauge(
            "aether_inference_in_flight", "Requests admitted and not yet answered",
            ("api",), registry=self.registry,
        )  # fmt: skip
        self._queue_depth = prom.Gauge(
            "aether_inference_queue_depth", "Requests waiting in a model version's batch queue",
            ("model", "version"), registry=self.registry,
        )  # fmt: skip
        self._batch_size = prom.Histogram(
            "aether_inference_batch_size", "Rows per executed batch",
            ("model", "version"), buckets=_BATCH_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self._state = prom.Gauge(
            "aether_model_state", "1 for the state a model version is in",
            ("model", "version", "state"), registry=self.registry,
        )  # fmt: skip
        self._prediction_log_dropped = prom.Counter(
            "aether_prediction_log_dropped", "Prediction-log entries dropped (buffer full or Redis down)",
            registry=self.registry,
        )  # fmt: skip
        self._children: dict[tuple[str, ...], Any] = {}
        self._request_children: dict[tuple[str, str, int | str, str], tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children[key] = metric.labels(*labels)
        return child

    def request(self, api: str, model: str, version: int | str, code: str, seconds: float | None) -> None:
        key = (api, model, version, code)
        children = self._request_children.get(key)
        if children is None:
            labels = (api, model, str(version))
            children = self._request_children[key] = (
                self._child(self._requests, *labels, code),
                self._child(self._latency, *labels),
            )
        children[0].inc()
        if seconds is not None:
            children[1].observe(seconds)

    def track_in_flight(self, api: str, read: Callable[[], int]) -> None:
        """The in-flight gauge of ``api`` reads ``read()`` whenever it is scraped."""
        self._child(self._in_flight, api).set_function(read)

    def prediction_log_dropped(self, count: int = 1) -> None:
        self._prediction_log_dropped.inc(count)

    # ManagerObserver
    def for_model(self, name: str, version: int) -> BatchObserver:
        return _BatchMetrics(self._child(self._batch_size, name, str(version)))

    def track_queue_depth(self, name: str, version: int, read: Callable[[], int]) -> None:
        self._child(self._queue_depth, name, str(version)).set_function(read)

    def model_state(self, name: str, version: int, state: ModelState) -> None:
        for each in ModelState:
            self._child(self._state, name, str(version), each.value).set(1 if each is state else 0)
        if state is not ModelState.READY:
            # Let go of the batcher the gauge read (an unloaded version's memory must be freed).
            self._child(self._queue_depth, name, str(version)).set_function(lambda: 0)

    def render(self) -> bytes:
        return bytes(prom.generate_latest(self.registry))


@dataclass
class MetricsServer:
    port: int
    _server: Any
    _thread: threading.Thread

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(metrics: ServingMetrics, listen: str) -> MetricsServer:
    """Serves ``/metrics`` on ``HOST:PORT`` (port 0 picks a free one) from a background thread.

    Built like ``prometheus_client.start_http_server`` but polling for shutdown every 50 ms rather than
    500 ms, so that stopping a data plane does not wait half a second."""
    host, port = listen.rsplit(":", 1)
    app = prom.make_wsgi_app(metrics.registry)
    server = make_server(host, int(port), app, ThreadingWSGIServer, handler_class=_SilentHandler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="aether-metrics", daemon=True
    )
    thread.start()
    return MetricsServer(int(server.server_port), server, thread)
