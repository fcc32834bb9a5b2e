"""Prometheus metrics of the serving path, exposed on an HTTP port (``/metrics``).

* ``aether_inference_requests_total{api,model,version,code}`` — requests answered, by gRPC status code;
* ``aether_inference_latency_seconds{api,model,version}`` — server-side latency histogram (OK requests);
* ``aether_inference_in_flight{api}`` — requests admitted and not yet answered (queued, fetching
  features or running): the autoscaler's queue depth;
* ``aether_inference_queue_depth{model,version}`` — requests waiting in a version's batcher;
* ``aether_inference_batch_size{model,version}`` — rows per executed batch;
* ``aether_inference_batch_wait_rows{model,version}`` — rows a request that finds the version's batcher
  idle waits for (1: none, it goes at once; more once waits have found company under load:
  ``data_plane.batch_company``), so that a latency step under load can be told from a slow model;
* ``aether_model_state{model,version,state}`` — 1 for the state a version is in;
* ``aether_watch_refused_total{watch,reason}`` — watch snapshots refused: ``reason="other_store"``, one
  of another metadata database than the one the held catalog or plans came from
  (``data_plane.watch_stream``), ``"invalid_plan"``, deployment plans that cannot be served;
* ``aether_near_cache_{hits,misses,invalidations,evictions}_total``, ``aether_near_cache_entries`` and
  ``aether_near_cache_bytes`` — the near cache of online-store blobs (``data_plane.near_cache``), when on.
* ``aether_event_loop_heartbeat_age_seconds`` — seconds since the serving event loop last stamped its
  heartbeat (every 0.5 s; ``data_plane.loop_heartbeat``), computed when scraped: this endpoint's thread
  answers while the loop is hung, and this is what tells it.

A request is labelled with the model and version it ran on (a failed Predict: its deployment, version
``""``) only when the names it gave resolved to a loaded version or a deployment; one whose names did not
(NOT_FOUND, a refusal while draining) is counted under ``model=""``, ``version=""`` with its status
code. Labelled by whatever names callers send, every distinct bad request would add series kept for ever:
/metrics and memory would grow without bound.

For the same reason a version's series (of every family above: request counts, latency and batch-size
histograms, queue depth, state) go once the model manager has released it (its unload's grace over; see
``ManagerObserver.version_released``): a data plane serving a newly trained version every day kept the
~40 samples of every version it ever served. They do not go at the release itself, though: the requests
the version served since the last scrape would never be seen (the autoscaler measures each series
against its own previous counts, and counts a series that is gone as nothing). A released version's
series stay, final counts and all, until at least ``released_series_s`` (``AETHER_METRICS_RELEASED_SERIES_S``,
300 s) after the release *and* one scrape begun after the release has been answered; they go at the
next release of a version of that model past both (0 = they go at the release, as before). A request
answered after its version's release (one of a PredictBatch whose other requests ran on, one failed at
the grace's end) is counted in its kept series, or under series made anew, which go the same way. The
unresolved series stay.

Each server owns its own registry (several servers may share a test process). What the request path pays
is kept small: the per-request series (request counts, latency and batch-size histograms) are plain Python
numbers that only the event-loop thread updates, turned into Prometheus metrics when scraped
(:class:`_RequestSeries`), instead of ``prometheus_client`` children whose every update takes a lock; the
gauges (in flight, queue depth) are read from their owners when scraped instead of being set on every
request.
"""

from __future__ import annotations

import bisect
import errno
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from wsgiref.simple_server import make_server

import prometheus_client as prom
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from clients.errors import FailedPrecondition
from data_plane.batching import BatchObserver
from data_plane.models.options import ManagerObserver
from data_plane.models.version import ModelState
from data_plane.near_cache import NearCacheStats
from data_plane.ports import split_listen

_go_float: Callable[[float], str] = floatToGoString  # how Prometheus spells a bucket bound ("+Inf", "1.0")

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
    0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
_BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)

#: The ``model`` and ``version`` label of a request that names no loaded version or deployment.
UNRESOLVED = ""

_K = TypeVar("_K")


class _Histogram:
    """One histogram series: per-bucket counts (not cumulative) and the sum of the observations."""

    __slots__ = ("_bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self._bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        counts = list(self.counts)  # one consistent copy: the loop thread may be adding meanwhile
        out, running = [], 0
        for bound, count in zip((*self._bounds, float("inf")), counts, strict=True):
            running += count
            out.append((_go_float(bound), float(running)))
        return out


class _RequestSeries(Collector):
    """Request counts by status code, latency of successful requests and rows per batch.

    Updated by the event-loop thread only, read by the scraping thread: an int or float update is atomic
    under the GIL and a scrape copies each bucket list at once, so a scrape may miss the requests that
    finished while it ran but never shows a histogram whose buckets disagree with its count."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str, str], list[int]] = {}
        self.latency: dict[tuple[str, str, str], _Histogram] = {}
        self.batch_rows: dict[tuple[str, str], _Histogram] = {}
        # Scrapes by the order they began (``next`` on a count is atomic under the GIL), and the last one
        # begun of those answered: a scrape begun after a release has read that version's final counts.
        self._began = itertools.count(1)
        self.answered = 0

    def begun(self) -> int:
        """How many scrapes have begun so far (the next one is numbered higher)."""
        return next(self._began) - 1  # a number skipped costs nothing: only the order matters

    def collect(self) -> Iterator[Metric]:
        ticket = next(self._began)
        yield from self._families()
        self.answered = max(self.answered, ticket)

    def _families(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "aether_inference_requests", "Inference requests answered, by status code",
            labels=("api", "model", "version", "code"),
        )  # fmt: skip
        for labels, count in list(self.requests.items()):
            requests.add_metric(labels, count[0])
        yield requests
        yield self._histograms(
            "aether_inference_latency_seconds", "Server-side latency of successful inference requests",
            ("api", "model", "version"), self.latency,
        )  # fmt: skip
        yield self._histograms(
            "aether_inference_batch_size", "Rows per executed batch", ("model", "version"), self.batch_rows
        )

    @staticmethod
    def _histograms(
        name: str, documentation: str, label_names: tuple[str, ...], series: dict[Any, _Histogram]
    ) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=label_names)
        for labels, histogram in list(series.items()):
            family.add_metric(labels, histogram.cumulative(), histogram.total)
        return family


class _BatchMetrics(BatchObserver):
    def __init__(self, batch_rows: _Histogram) -> None:
        self.observe = batch_rows.observe

    def batch_started(self, size: int, rows: int, queue_depth: int) -> None:
        self.observe(rows)


class _NearCacheSeries(Collector):
    """The near cache's counters, read from it when scraped."""

    def __init__(self, read: Callable[[], NearCacheStats]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        stats = self._read()
        for name, value, text in (
            ("hits", stats.hits, "Online-store blobs served from the near cache"),
            ("misses", stats.misses, "Near-cache lookups that had to ask Redis"),
            (
                "invalidations",
                stats.invalidations,
                "Near-cache entries dropped because Redis said they changed",
            ),
            ("evictions", stats.evictions, "Near-cache entries dropped to stay within its size"),
        ):
            yield CounterMetricFamily(f"aether_near_cache_{name}", text, value=value)
        yield GaugeMetricFamily("aether_near_cache_entries", "Blobs in the near cache", value=stats.entries)
        yield GaugeMetricFamily("aether_near_cache_bytes", "Bytes the near cache counts", value=stats.bytes)


class _LoopHeartbeatSeries(Collector):
    """The event loop's heartbeat age, read when scraped (by this thread: it answers while the loop hangs)."""

    def __init__(self, read_age_s: Callable[[], float]) -> None:
        self._read_age_s = read_age_s

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "aether_event_loop_heartbeat_age_seconds",
            "Seconds since the serving event loop last stamped its heartbeat (every 0.5 s when it turns)",
            value=self._read_age_s(),
        )


@dataclass
class ServingMetrics(ManagerObserver):
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))
    #: How long a released version's series stay at least (see the module doc); 0 = not kept.
    released_series_s: float = 300.0
    #: Monotonic seconds (a test may step it).
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._series = _RequestSeries()
        self.registry.register(self._series)
        self._in_flight = prom.Gauge(
            "aether_inference_in_flight", "Requests admitted and not yet answered",
            ("api",), registry=self.registry,
        )  # fmt: skip
        self._queue_depth = prom.Gauge(
            "aether_inference_queue_depth", "Requests waiting in a model version's batch queue",
            ("model", "version"), registry=self.registry,
        )  # fmt: skip
        self._wait_rows = prom.Gauge(
            "aether_inference_batch_wait_rows",
            "Rows a request arriving at a model version's idle batcher waits for (1: none)",
            ("model", "version"), registry=self.registry,
        )  # fmt: skip
        self._state = prom.Gauge(
            "aether_model_state", "1 for the state a model version is in",
            ("model", "version", "state"), registry=self.registry,
        )  # fmt: skip
        self._prediction_log_dropped = prom.Counter(
            "aether_prediction_log_dropped", "Prediction-log entries dropped (buffer full or Redis down)",
            registry=self.registry,
        )  # fmt: skip
        self._watch_refused = prom.Counter(
            "aether_watch_refused", "Watch snapshots refused (held ones still served), by reason",
            ("watch", "reason"), registry=self.registry,
        )  # fmt: skip
        self._children: dict[tuple[str, ...], Any] = {}
        # The gauges labelled (model, version, ...) by name, for forgetting a released version's children.
        self._per_version: dict[str, Any] = {
            g._name: g for g in (self._queue_depth, self._wait_rows, self._state)
        }
        # (model, version) the manager holds (loading, serving or unloading, not yet released): what a
        # release keeps of that model's series.
        self._held: set[tuple[str, str]] = set()
        # (model, version) released and still kept → (scrapes begun by the release, its clock time).
        self._released: dict[tuple[str, str], tuple[int, float]] = {}
        # (api, model, version, code) → that code's count and the latency series of (api, model, version)
        self._request_series: dict[tuple[str, str, int | str, str], tuple[list[int], _Histogram]] = {}
        self._lock = threading.Lock()

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children[key] = metric.labels(*labels)
        return child

    def request(
        self, api: str, model: str, version: int | str, code: str, seconds: float | None, count: int = 1
    ) -> None:
        """``count`` requests with one outcome (several: a PredictBatch refused whole, never looked into)."""
        key = (api, model, version, code)
        series = self._request_series.get(key)
        if series is None:
            labels = (api, model, str(version))
            counter = self._series.requests.setdefault((*labels, code), [0])
            latency = self._series.latency.setdefault(labels, _Histogram(LATENCY_BUCKETS))
            series = self._request_series[key] = (counter, latency)
        series[0][0] += count
        if seconds is not None:
            series[1].observe(seconds)

    def track_in_flight(self, api: str, read: Callable[[], int]) -> None:
        """The in-flight gauge of ``api`` reads ``read()`` whenever it is scraped."""
        self._child(self._in_flight, api).set_function(read)

    def track_near_cache(self, read: Callable[[], NearCacheStats]) -> None:
        self.registry.register(_NearCacheSeries(read))

    def track_loop_heartbeat(self, read_age_s: Callable[[], float]) -> None:
        """Exports the serving loop's heartbeat age (``data_plane.loop_heartbeat``), ``read_age_s()`` when
        scraped."""
        self.registry.register(_LoopHeartbeatSeries(read_age_s))

    def prediction_log_dropped(self, count: int = 1) -> None:
        self._prediction_log_dropped.inc(count)

    def watch_refused(self, watch: str, reason: str) -> None:
        """A snapshot of ``watch`` (``registry``, ``deployment_plans``) refused for ``reason``."""
        self._child(self._watch_refused, watch, reason).inc()

    # ManagerObserver
    def for_model(self, name: str, version: int) -> BatchObserver:
        series = self._series.batch_rows.setdefault((name, str(version)), _Histogram(_BATCH_BUCKETS))
        return _BatchMetrics(series)

    def track_queue_depth(self, name: str, version: int, read: Callable[[], int]) -> None:
        self._child(self._queue_depth, name, str(version)).set_function(read)

    def track_batch_wait_rows(self, name: str, version: int, read: Callable[[], int]) -> None:
        self._child(self._wait_rows, name, str(version)).set_function(read)

    def model_state(self, name: str, version: int, state: ModelState) -> None:
        self._held.add((name, str(version)))
        self._released.pop((name, str(version)), None)  # loaded again: its series are the new load's
        for each in ModelState:
            self._child(self._state, name, str(version), each.value).set(1 if each is state else 0)
        if state is not ModelState.READY:
            # Let go of the batcher the gauges read (an unloaded version's memory must be freed).
            self._child(self._queue_depth, name, str(version)).set_function(lambda: 0)
            self._child(self._wait_rows, name, str(version)).set_function(lambda: 0)

    def version_released(self, name: str, version: int) -> None:
        """Keeps this version's series until its final counts were scraped (see the module doc), and
        removes those of every version of model ``name`` the manager no longer holds whose time is up:
        released ones kept long enough and scraped since, and any a late request made anew."""
        released = (name, str(version))
        self._held.discard(released)
        if self.released_series_s > 0:
            self._released[released] = (self._series.begun(), self.clock())
        now, answered = self.clock(), self._series.answered
        expired = {
            k
            for k, (begun, at) in self._released.items()
            if answered > begun and now - at >= self.released_series_s
        }

        def gone(model: str, version: str) -> bool:
            if model != name or version == UNRESOLVED or (model, version) in self._held:
                return False
            return (model, version) not in self._released or (model, version) in expired

        _drop(self._request_series, lambda k: gone(k[1], str(k[2])))
        _drop(self._series.requests, lambda k: gone(k[1], k[2]))
        _drop(self._series.latency, lambda k: gone(k[1], k[2]))
        _drop(self._series.batch_rows, lambda k: gone(k[0], k[1]))
        with self._lock:
            for key in _drop(self._children, lambda k: k[0] in self._per_version and gone(k[1], k[2])):
                self._per_version[key[0]].remove(*key[1:])
        _drop(self._released, lambda k: gone(*k))

    def render(self) -> bytes:
        return bytes(prom.generate_latest(self.registry))


def _drop(mapping: dict[_K, Any], doomed: Callable[[_K], bool]) -> list[_K]:
    """Removes the keys ``doomed`` picks (one at a time: a scrape copying the dict meanwhile sees each
    removal whole, under the GIL); those removed."""
    keys = [k for k in mapping if doomed(k)]
    for key in keys:
        del mapping[key]
    return keys


@dataclass
class MetricsServer:
    port: int
    _server: Any
    _thread: threading.Thread

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _IPv6WSGIServer(ThreadingWSGIServer):
    address_family = socket.AF_INET6


def _server_class(host: str) -> type[ThreadingWSGIServer]:
    """The WSGI server for ``host``: ``ThreadingWSGIServer`` binds IPv4 only, and an IPv6 address the
    settings accept ([::1]:9090) failed to bind ("Address family for hostname not supported"). The
    family is chosen as ``data_plane.ports.check_free`` chooses it."""
    return _IPv6WSGIServer if ":" in host else ThreadingWSGIServer


def start_metrics_server(metrics: ServingMetrics, listen: str) -> MetricsServer:
    """Serves ``/metrics`` on ``HOST:PORT`` (port 0 picks a free one) from a background thread.

    Built like ``prometheus_client.start_http_server`` but polling for shutdown every 50 ms rather than
    500 ms, so that stopping a data plane does not wait half a second."""
    host, port = split_listen(listen)
    app = prom.make_wsgi_app(metrics.registry)
    try:
        server = make_server(host, port, app, _server_class(host), handler_class=_SilentHandler)
    except OSError as exc:  # taken since the start checked it (data_plane.ports): one line, as for --listen
        reason = "the address is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise FailedPrecondition(f"cannot serve metrics on {listen}: {reason}") from None
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="aether-metrics", daemon=True
    )
    thread.start()
    return MetricsServer(int(server.server_port), server, thread)
