"""The serving metrics: gauges read their owners when scraped, and request counts land under the right
labels through the cached children."""

from __future__ import annotations

import gc
import weakref

from data_plane.admission import Admission
from data_plane.metrics import ServingMetrics
from data_plane.models.manager import ModelState


def _value(metrics: ServingMetrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_the_in_flight_gauge_reads_the_admission_gate_when_scraped() -> None:
    metrics = ServingMetrics()
    gate = Admission()
    metrics.track_in_flight("ModelInfer", lambda: gate.in_flight)
    gate.enter()
    gate.enter()
    assert _value(metrics, "aether_inference_in_flight", {"api": "ModelInfer"}) == 2
    gate.leave()
    assert _value(metrics, "aether_inference_in_flight", {"api": "ModelInfer"}) == 1


def test_the_queue_depth_gauge_lets_go_of_a_version_that_leaves_ready() -> None:
    metrics = ServingMetrics()

    class Queue:
        depth = 7

    queue = Queue()
    metrics.track_queue_depth("m", 3, lambda held=queue: held.depth)  # the gauge holds the queue
    metrics.model_state("m", 3, ModelState.READY)
    assert _value(metrics, "aether_inference_queue_depth", {"model": "m", "version": "3"}) == 7
    alive = weakref.ref(queue)
    metrics.model_state("m", 3, ModelState.UNLOADED)
    del queue
    gc.collect()
    assert alive() is None  # the gauge no longer holds what it read
    assert _value(metrics, "aether_inference_queue_depth", {"model": "m", "version": "3"}) == 0


def test_requests_count_under_their_own_code_and_version() -> None:
    metrics = ServingMetrics()
    for version, code, seconds in [
        (1, "OK", 0.001),
        (1, "OK", 0.002),
        (2, "OK", 0.003),
        (1, "NOT_FOUND", None),
    ]:
        metrics.request("ModelInfer", "m", version, code, seconds)
    total = "aether_inference_requests_total"
    assert _value(metrics, total, {"api": "ModelInfer", "model": "m", "version": "1", "code": "OK"}) == 2
    assert _value(metrics, total, {"api": "ModelInfer", "model": "m", "version": "2", "code": "OK"}) == 1
    assert (
        _value(metrics, total, {"api": "ModelInfer", "model": "m", "version": "1", "code": "NOT_FOUND"}) == 1
    )
    count = "aether_inference_latency_seconds_count"
    assert _value(metrics, count, {"api": "ModelInfer", "model": "m", "version": "1"}) == 2  # OK ones only
