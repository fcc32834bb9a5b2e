"""The autoscaler's loop: every ``policy.interval_s`` (30 s by default) it scrapes each data-plane replica's
Prometheus ``/metrics`` endpoint, turns what it read into the fleet's :class:`~autoscaler.Load`, asks the
pure :func:`~control_plane.deployments.autoscaler.decide` for the replica count and applies it through the
:class:`~control_plane.deployments.replicas.ReplicaManager` (new replicas count only once SERVING).

What is read from each replica (``data_plane/metrics.py``):

* queue depth — ``aether_inference_in_flight``: requests admitted and not yet answered (queued for a
  batch, fetching features or running), summed over the replicas;
* p99 latency — ``aether_inference_latency_seconds``: each series' cumulative bucket counts (a series:
  one label set, an api and a model version), minus those of the same series at the previous scrape of
  the same replica, summed over series and replicas, so the p99 is that of the requests served during
  the interval (as the upper edge of its bucket: never optimistic). A series whose counts went down
  restarted (its process, or its version released and loaded again) and a new one count whole; one that
  is gone (the data plane drops a version's series after it released it, once a scrape begun since the
  release read their final counts and ``AETHER_METRICS_RELEASED_SERIES_S`` passed) counts nothing: summed per
  replica before the difference, a dropped version made the replica look restarted, and its other
  versions' whole history counted as the interval's (or, masked by their new requests, its counts were
  taken from theirs). Samples are kept by the replica's start serial (``Replica.serial``), not its
  number: a replica that replaces a stopped one takes its number, and maybe its metrics port, but none
  of its counts.

* event loop — ``aether_event_loop_heartbeat_age_seconds``: seconds since the replica's serving event loop
  last ran (it stamps a heartbeat every 0.5 s). ``/metrics`` is served by a thread of its own, so it
  answers while that loop is hung, its gauges frozen: read as they are, a hung replica looked idle, the
  fleet shrank, and the scale-down stopped a healthy replica (the newest) in its place. An endpoint whose
  age is the fleet's stall threshold or more (``stalled_after_s``: ``FleetSettings.stalled_after_s``,
  ``--stalled-after-s`` / ``AETHER_REPLICA_STALLED_AFTER_S``, :data:`DEFAULT_STALLED_AFTER_S` by default) is
  *stalled*: its sample is left out of the load (its previous
  one kept, as for a failed scrape), the warning says so each interval, ``Load.stalled`` counts its
  replica, and a scale-down stops stalled replicas first, killed at once (a loop that does not run cannot
  drain; :meth:`ReplicaManager.scale_to`). It does not hold the count up as an unscraped replica does:
  what it serves is known, nothing, so the fleet is sized on the others' load. A hung replica that no
  scale-down takes is replaced once its health probes have gone unanswered for a few passes, as before.

A replica that cannot be scraped is left out of that interval's load (and logged); it is still counted
as running, since the replica manager decides what runs, and counted in ``Load.unmeasured``: such an
interval never recommends fewer replicas (its load is unknown, not none; a replica hung with a long queue
made the fleet look idle, and the scale-down stopped its healthy peer). It keeps its previous sample, so
its next successful scrape counts the requests since then (the missed interval too), never its whole
lifetime.
A replica whose process has exited, or that is hung (no answer from its health to a few passes' probes
in a row), is replaced before each decision (:meth:`ReplicaManager.replace_failed`): a hung one's scrape
fails every interval too, so without that it was only ever logged here. A replica whose process exits is
replaced at once, not at the next decision: its exit ends the pause between decisions
(``ReplicaManager.exited``), and the loop replaces it, then waits out the rest of the interval.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from clients.env_values import env_float, env_int
from control_plane.background import BackgroundLoop
from control_plane.deployments.autoscaler import AutoscalerPolicy, Load, Recommendation, decide
from control_plane.deployments.replica import ReplicaRefused, metrics_addresses
from control_plane.deployments.replicas import ReplicaManager

_log = logging.getLogger("aether.control_plane.autoscaler")

IN_FLIGHT = "aether_inference_in_flight"
LATENCY_BUCKET = "aether_inference_latency_seconds_bucket"
LOOP_AGE = "aether_event_loop_heartbeat_age_seconds"
SCRAPE_TIMEOUT_S = 2.0
#: A replica endpoint whose event loop has not stamped its heartbeat for this long is stalled, unless the
#: fleet says otherwise (see the module's docstring): ten times the stamp's period, far beyond a busy loop's
#: lag, and well within the health probes' verdict (three unanswered 2 s probes, one per interval).
DEFAULT_STALLED_AFTER_S = 5.0
#: How often a data plane's loop stamps its heartbeat (``data_plane.loop_heartbeat.PERIOD_S``, which this
#: package may not import; a test holds them equal): a stall threshold must be above it, or a loop that
#: turns is taken for stalled between two stamps.
HEARTBEAT_PERIOD_S = 0.5

Scrape = Callable[[str], Awaitable[str]]
SeriesKey = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class PolicyVariable:
    """What one policy variable sets and what it accepts: the ranges :class:`AutoscalerPolicy` checks
    field by field (``min <= max`` is checked once flags and variables are merged)."""

    policy_field: str
    whole: bool = False  # a whole number; otherwise a finite float
    minimum: float | None = None  # inclusive
    above: float | None = None  # exclusive


#: Environment variable -> the AutoscalerPolicy field it sets and its range.
POLICY_VARIABLES: dict[str, PolicyVariable] = {
    "AETHER_MIN_REPLICAS": PolicyVariable("min_replicas", whole=True, minimum=1),
    "AETHER_MAX_REPLICAS": PolicyVariable("max_replicas", whole=True, minimum=1),
    "AETHER_TARGET_QUEUE_PER_REPLICA": PolicyVariable("target_queue_per_replica", above=0.0),
    "AETHER_TARGET_P99_MS": PolicyVariable("target_p99_ms", above=0.0),
    "AETHER_AUTOSCALE_INTERVAL_S": PolicyVariable("interval_s", above=0.0),
    "AETHER_AUTOSCALE_UP_WINDOW_S": PolicyVariable("up_window_s", minimum=0.0),
    "AETHER_AUTOSCALE_DOWN_WINDOW_S": PolicyVariable("down_window_s", minimum=0.0),
}


def policy_values_from_env(env: Mapping[str, str] | None = None) -> dict[str, int | float]:
    """The policy fields the environment sets (:data:`POLICY_VARIABLES`; an empty variable sets nothing),
    each checked for its type and range but not yet against the others: flags may still replace some of
    them. A wrong value is a :class:`~clients.env_values.ConfigurationError` naming the variable and its
    range (bare ``int()``/``float()`` raised ValueError text that named neither, and let ``nan`` and
    ``inf`` through)."""
    env = os.environ if env is None else env
    values: dict[str, int | float] = {}
    for variable, rule in POLICY_VARIABLES.items():
        if not env.get(variable):
            continue
        if rule.whole:
            minimum = None if rule.minimum is None else int(rule.minimum)
            values[rule.policy_field] = env_int(env, variable, 0, minimum=minimum)
        else:
            values[rule.policy_field] = env_float(env, variable, 0.0, minimum=rule.minimum, above=rule.above)
    return values


def policy_from_env(env: Mapping[str, str] | None = None) -> AutoscalerPolicy:
    """``AETHER_AUTOSCALE_INTERVAL_S``, ``AETHER_MIN_REPLICAS``, ``AETHER_MAX_REPLICAS``,
    ``AETHER_TARGET_QUEUE_PER_REPLICA``, ``AETHER_TARGET_P99_MS`` and the stabilization windows
    ``AETHER_AUTOSCALE_UP_WINDOW_S`` and ``AETHER_AUTOSCALE_DOWN_WINDOW_S`` over the policy's defaults."""
    return AutoscalerPolicy(**policy_values_from_env(env))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class ReplicaSample:
    """One scrape of one replica."""

    in_flight: float = 0.0
    #: Per latency series (its labels but ``le``, sorted), its cumulative counts by upper bucket edge in
    #: seconds (``inf`` included).
    latency_series: Mapping[SeriesKey, Mapping[float, float]] = field(default_factory=dict)
    #: Seconds since the replica's event loop last ran (None: a replica that does not say).
    loop_age_s: float | None = None

    @property
    def latency_buckets(self) -> dict[float, float]:
        """The cumulative counts by bucket edge summed over every series."""
        return _summed(self.latency_series.values())


def parse_metrics(text: str) -> ReplicaSample:
    """The autoscaler's inputs from one replica's Prometheus exposition text."""
    in_flight = 0.0
    series: dict[SeriesKey, dict[float, float]] = {}
    loop_age_s: float | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == IN_FLIGHT:
                in_flight += sample.value
            elif sample.name == LATENCY_BUCKET:
                key = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
                series.setdefault(key, {})[float(sample.labels["le"])] = sample.value
            elif sample.name == LOOP_AGE:
                loop_age_s = sample.value
    return ReplicaSample(in_flight, series, loop_age_s)


def interval_counts(previous: ReplicaSample | None, current: ReplicaSample) -> dict[float, float]:
    """Cumulative counts by bucket edge of the requests served since ``previous``, each series against
    its own previous counts (see the module's docstring), summed."""
    before = {} if previous is None else previous.latency_series
    deltas = []
    for key, counts in current.latency_series.items():
        old = before.get(key, {})
        delta = {e: c - old.get(e, 0.0) for e, c in counts.items()}
        deltas.append(counts if any(c < 0 for c in delta.values()) else delta)  # went back: restarted
    return _summed(deltas)


def _summed(histograms: Iterable[Mapping[float, float]]) -> dict[float, float]:
    total: dict[float, float] = {}
    for counts in histograms:
        for edge, count in counts.items():
            total[edge] = total.get(edge, 0.0) + count
    return total


def p99_ms(cumulative: Mapping[float, float]) -> float | None:
    """The p99 of a cumulative histogram, as the upper edge of the bucket holding it (the largest finite
    edge when it lies beyond every edge); None when it counts nothing."""
    edges = sorted(cumulative)
    total = cumulative[edges[-1]] if edges else 0.0
    if total <= 0:
        return None
    wanted = math.ceil(0.99 * total)
    finite = [e for e in edges if math.isfinite(e)]
    for edge in edges:
        if cumulative[edge] >= wanted:
            if math.isfinite(edge):
                return edge * 1000.0
            break
    return finite[-1] * 1000.0 if finite else None


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


async def fetch_metrics(address: str) -> str:
    """The exposition text of ``http://ADDRESS/metrics``."""

    def get() -> str:
        # Replicas run on this host: an HTTP proxy set for the outside world (``http_proxy`` without a
        # ``no_proxy`` naming the loopback) cannot reach them, and urlopen would send every scrape there.
        with _DIRECT.open(f"http://{address}/metrics", timeout=SCRAPE_TIMEOUT_S) as response:
            body: bytes = response.read()
            return body.decode()

    return await asyncio.to_thread(get)


@dataclass(frozen=True, slots=True)
class ScaleEvent:
    """One decision of the loop: what it measured and the replica count it asked for."""

    at_s: float
    load: Load
    replicas: int


#: What the fleet does with a stalled replica, in its warning: while it serves, the replica's load is left
#: out of the decision and a scale-down stops it first; at the fleet's stop (where "a scale-down stops it
#: first" read as if the fleet went on), it is killed at once, since a stalled loop never acts on a drain.
_STALLED_WHILE_SERVING = "its load is left out and a scale-down stops it first"
_STALLED_AT_STOP = "the fleet is stopping: it is killed at once, since a stalled loop never acts on a drain"


class AutoscaleLoop:
    def __init__(
        self,
        replicas: ReplicaManager,
        policy: AutoscalerPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        scrape: Scrape = fetch_metrics,
        stalled_after_s: float = DEFAULT_STALLED_AFTER_S,
    ) -> None:
        self._replicas = replicas
        self._policy = policy
        self._clock = clock
        self._scrape = scrape
        #: The heartbeat age at which a replica's endpoint is stalled.
        self.stalled_after_s = stalled_after_s
        #: Serials of the replicas the latest measurement found stalled: a scale-down stops them first.
        self.stalled: frozenset[int] = frozenset()
        #: Their metrics endpoints found stalled: of a --workers replica, the workers killed with it.
        self.stalled_endpoints: frozenset[str] = frozenset()
        self._history: tuple[Recommendation, ...] = ()
        # By replica serial and endpoint: a replica that replaces a stopped one may take its number and even
        # its metrics port, and must not be taken for it (its counts minus the old replica's).
        self._previous: dict[tuple[int, str], ReplicaSample] = {}
        self._background = BackgroundLoop("autoscale-loop")
        self.events: list[ScaleEvent] = []  # the most recent decisions, for inspection
        #: The decision being applied, while it is (None otherwise): what a change of the replica list then
        #: comes from. Any other change (a crashed or hung replica replaced) is no decision's.
        self.applying: ScaleEvent | None = None
        # Set when the fleet's first start refused its command line (a usage error before any replica
        # served): the loop has stopped, since every start would fail the same way; the fleet stops with
        # ``error``. Later exits, of whatever status, are retried (``ReplicaManager.scale_to``).
        self.failed = asyncio.Event()
        self.error: ReplicaRefused | None = None

    async def measure(self, *, stopping: bool = False) -> Load:
        """The fleet's load since the previous measurement. ``stopping``: taken by the fleet's stop (see
        :meth:`stalled_now`), which a stalled replica's warning then says is what it does with it."""
        # A replica run with --workers has one endpoint per worker process: each is scraped, as its own.
        endpoints = [
            (r.number, (r.serial, address))
            for r in self._replicas.replicas
            for address in metrics_addresses(r.metrics_address)
        ]
        texts = await asyncio.gather(*(self._scrape(a) for _, (_, a) in endpoints), return_exceptions=True)
        queue = 0.0
        latency: dict[float, float] = {}
        unmeasured: set[int] = set()  # serials of the replicas with an endpoint that did not answer
        stalled: set[int] = set()  # serials of the replicas with an endpoint whose event loop is not running
        stalled_endpoints: set[str] = set()
        # An endpoint whose scrape fails keeps its last sample: without it, its next interval would count its
        # whole lifetime histogram (old spikes long gone back in the p99). Only an endpoint that is gone
        # loses its sample (serials are never reused: a replica that left never comes back).
        listed = {key for _, key in endpoints}
        previous = self._previous
        self._previous = {key: s for key, s in previous.items() if key in listed}
        for (number, key), text in zip(endpoints, texts, strict=True):
            if isinstance(text, BaseException):
                _log.warning("could not scrape replica %d at %s: %s", number, key[1], text)
                unmeasured.add(key[0])
                continue
            sample = parse_metrics(text)
            if sample.loop_age_s is not None and sample.loop_age_s >= self.stalled_after_s:
                # Its gauges are frozen, not a reading: the sample is left out, the previous one kept.
                _log.warning(
                    "replica %d at %s: its event loop has not run for %.1f s (hung?); %s",
                    number,
                    key[1],
                    sample.loop_age_s,
                    _STALLED_AT_STOP if stopping else _STALLED_WHILE_SERVING,
                )
                stalled.add(key[0])
                stalled_endpoints.add(key[1])
                continue
            self._previous[key] = sample
            queue += sample.in_flight
            for edge, count in interval_counts(previous.get(key), sample).items():
                latency[edge] = latency.get(edge, 0.0) + count
        self.stalled = frozenset(stalled)
        self.stalled_endpoints = frozenset(stalled_endpoints)
        # A stalled replica is not unmeasured: what it serves is known (nothing), so it holds no count up.
        return Load(
            self._replicas.count,
            queue,
            p99_ms(latency),
            unmeasured=len(unmeasured - stalled),
            stalled=len(stalled),
        )

    async def stalled_now(self) -> tuple[frozenset[int], frozenset[str]]:
        """The replicas (serials) and metrics endpoints whose event loop is stalled now, by one more
        measurement: what the fleet's stop kills at once instead of telling them to drain, which a stalled
        loop never acts on (they waited for their whole stop timeout). Nothing when the measurement fails:
        the stop then drains every replica, as before."""
        try:
            await self.measure(stopping=True)
        except Exception:
            _log.exception("could not look for stalled replicas before the stop; draining every one")
            return frozenset(), frozenset()
        return self.stalled, self.stalled_endpoints

    async def tick(self) -> int:
        """One measurement and decision, applied; the replica count asked for."""
        await self._replicas.replace_failed()
        load = await self.measure()
        now = self._clock()
        wanted, self._history = decide(self._policy, load, self._history, now)
        event = ScaleEvent(now, load, wanted)
        self.events = [*self.events[-99:], event]
        if wanted != self._replicas.count:
            _log.info(
                "scaling data-plane replicas %d -> %d (queue %.0f, p99 %s ms, %d replicas not measured, %d "
                "stalled)",
                self._replicas.count,
                wanted,
                load.queue_depth,
                "n/a" if load.p99_ms is None else f"{load.p99_ms:.1f}",
                load.unmeasured,
                load.stalled,
            )
            self.applying = event
            try:
                # A stalled replica leaves before any healthy one: stopping the newest instead left the hung
                # one listed, its clients' calls hanging, and took a working replica away.
                await self._replicas.scale_to(
                    wanted, leaving_first=self.stalled, stalled_endpoints=self.stalled_endpoints
                )
            finally:
                self.applying = None
        return wanted

    async def run(self) -> None:
        """Brings the fleet to at least ``min_replicas``, then decides every ``interval_s``; ends, with
        ``failed`` set, when the first start refuses its command line (:class:`ReplicaRefused`)."""
        try:
            await self._run()
        except ReplicaRefused as exc:
            self.error = exc
            self.failed.set()

    async def _run(self) -> None:
        if self._replicas.count < self._policy.min_replicas:
            await self._replicas.scale_to(self._policy.min_replicas)
        while self._background.running:
            await self._pause_healing(self._policy.interval_s)
            if not self._background.running:
                return
            try:
                await self.tick()
            except ReplicaRefused:
                raise  # not raised after the first starts (replicas.py), but fatal wherever it comes from
            except Exception:  # a replica failed to start, say: the next interval tries again
                _log.exception("autoscaler pass failed")

    async def _pause_healing(self, seconds: float) -> None:
        """Waits ``seconds`` (less when the loop stops), replacing a replica whose process exits meanwhile as
        soon as it does, once per pause: a replica that crashes again at once (a model that kills it on
        its first request) is replaced at the next decision, so a crash loop restarts a replica no more
        than twice an interval, not as fast as it can start."""
        deadline = time.monotonic() + seconds  # real time, whatever clock stamps the decisions
        if self._background.running:
            exit_seen = asyncio.ensure_future(self._replicas.exited.wait())
            pause = asyncio.ensure_future(self._background.pause(seconds))
            try:
                done, _ = await asyncio.wait((exit_seen, pause), return_when=asyncio.FIRST_COMPLETED)
            finally:
                exit_seen.cancel()
                pause.cancel()
            if exit_seen not in done or not self._background.running:
                return
            try:
                await self._replicas.replace_failed(probe=False)
            except ReplicaRefused:
                raise
            except Exception:  # its replacement failed to start, say: the next decision tries again
                _log.exception("replacing an exited replica failed")
        await self._background.pause(max(deadline - time.monotonic(), 0.0))

    def start(self) -> None:
        self._background.start(self.run())

    async def stop(self) -> None:
        """Stops deciding (the replicas keep running: :meth:`ReplicaManager.close` stops them)."""
        await self._background.stop()
