"""Predict traffic as the operator's apps would send it: one zone per request over gRPC, routed by the
deployment's plan; each request's delayed label (the demand that actually happened) is reported through
``RecordFeedback``. Runs in a background thread so the control plane's loops (monitor, retrainer, canary
controller) can act while it flows; counts the variants that answered and the latencies."""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from clients.errors import AetherError
from clients.sdk.inference import InferenceClient
from clients.sdk.monitoring import MonitoringClient
from clients.sdk.online import OnlineFeaturesClient
from control_plane.demo import world

DEPLOYMENT = "zone-demand"


def zone_labels(
    data_plane: str, zones: int, relationship: world.Relationship, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    """The demand each zone will have, from its current online features (what the model sees)."""
    rows = [{"zone_id": str(z)} for z in range(zones)]
    with OnlineFeaturesClient(data_plane) as online:
        result = online.get_online_features(list(world.MODEL_FEATURES), rows)
    features = {}
    for ref in world.MODEL_FEATURES:
        view, name = ref.split(":")
        features[name] = np.asarray(result.block(view).values[name], dtype=np.float64)
    return relationship.demand(features, rng)


@dataclass
class TrafficStats:
    variants: Counter[str] = field(default_factory=Counter)
    versions: Counter[int] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    labelled: int = 0

    def percentiles(self) -> dict[str, float]:
        if len(self.latencies_ms) < 2:
            return {}
        q = statistics.quantiles(self.latencies_ms, n=100)
        return {"p50": q[49], "p95": q[94], "p99": q[98]}

    def split(self) -> dict[str, float]:
        total = sum(self.variants.values()) or 1
        return {name: 100.0 * count / total for name, count in sorted(self.variants.items())}


class Traffic:
    def __init__(
        self, data_plane: str, control_plane: str, labels: npt.NDArray[np.float64], interval_s: float,
        seed: int,
    ) -> None:  # fmt: skip
        self._data_plane, self._control_plane = data_plane, control_plane
        self._labels = labels
        self._interval_s = interval_s
        # Zones are visited round-robin in a shuffled order, so any run of len(labels) consecutive
        # requests sees every zone once: a drift window then holds each zone's current value once, not
        # some zones twice (repeated values would look like a narrower distribution than the reference).
        self._order = np.random.default_rng(seed).permutation(len(labels))
        self._next = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.stats = TrafficStats()
        self._thread: threading.Thread | None = None

    def serve(self, requests: int) -> TrafficStats:
        """Sends ``requests`` requests in the foreground; returns their stats."""
        self.stats = TrafficStats()
        with (
            InferenceClient(self._data_plane) as inference,
            MonitoringClient(self._control_plane) as monitoring,
        ):
            pending: list[tuple[str, float]] = []
            for _ in range(requests):
                self._one(inference, pending)
                if len(pending) >= 50:
                    self._label(monitoring, pending)
                time.sleep(self._interval_s)
            self._label(monitoring, pending)
        return self.stats

    def start(self) -> None:
        """Serves in the background until :meth:`stop`."""
        self.stats = TrafficStats()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="demo-traffic", daemon=True)
        self._thread.start()

    def stop(self) -> TrafficStats:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        return self.stats

    def snapshot(self) -> TrafficStats:
        with self._lock:
            return TrafficStats(
                Counter(self.stats.variants), Counter(self.stats.versions), list(self.stats.latencies_ms),
                self.stats.errors, self.stats.labelled,
            )  # fmt: skip

    def _run(self) -> None:
        with (
            InferenceClient(self._data_plane) as inference,
            MonitoringClient(self._control_plane) as monitoring,
        ):
            pending: list[tuple[str, float]] = []
            while not self._stop.is_set():
                self._one(inference, pending)
                if len(pending) >= 50:
                    self._label(monitoring, pending)
                self._stop.wait(self._interval_s)
            self._label(monitoring, pending)

    def _one(self, inference: InferenceClient, pending: list[tuple[str, float]]) -> None:
        zone = int(self._order[self._next % len(self._order)])
        self._next += 1
        request_id = uuid.uuid4().hex
        started = time.perf_counter()
        try:
            result = inference.predict(
                DEPLOYMENT, [{"zone_id": zone}], routing_key=request_id, request_id=request_id
            )
        except AetherError:
            with self._lock:
                self.stats.errors += 1
            return
        elapsed_ms = (time.perf_counter() - started) * 1000
        with self._lock:
            self.stats.latencies_ms.append(elapsed_ms)
            self.stats.variants[result.variant] += 1
            self.stats.versions[result.model_version] += 1
        pending.append((result.request_id or request_id, float(self._labels[zone])))

    def _label(self, monitoring: MonitoringClient, pending: list[tuple[str, float]]) -> None:
        if not pending:
            return
        answer = monitoring.record_feedback(pending)
        with self._lock:
            self.stats.labelled += int(answer.recorded)
        pending.clear()


def wait_until_serving(data_plane: str, timeout_s: float = 90.0) -> None:
    """Predict answers once the data plane has loaded the model and the plan that routes to it."""
    deadline = time.monotonic() + timeout_s
    with InferenceClient(data_plane) as inference:
        while True:
            try:
                inference.predict(DEPLOYMENT, [{"zone_id": 0}])
                return
            except AetherError as error:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"deployment {DEPLOYMENT} not serving after {timeout_s:g}s: {error}"
                    ) from error
                time.sleep(0.25)
