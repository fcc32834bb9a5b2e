"""The serving metrics: gauges read their owners when scraped, request counts land under the right
labels, and the histograms kept as plain numbers expose what prometheus_client's own would."""

from __future__ import annotations

import gc
import weakref

import prometheus_client as prom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.utils import floatToGoString

from data_plane.admission import Admission
from data_plane.metrics import LATENCY_BUCKETS, ServingMetrics
from data_plane.models.version import ModelState


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


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=5.0, allow_nan=False), max_size=40))
def test_latency_histogram_matches_a_prometheus_histogram(latencies: list[float]) -> None:
    metrics = ServingMetrics()
    reference = CollectorRegistry()
    histogram = prom.Histogram(
        "ref_latency", "reference", buckets=LATENCY_BUCKETS, registry=reference
    )  # prometheus_client's own, as the brute-force reference
    for seconds in latencies:
        metrics.request("Predict", "m", 4, "OK", seconds)
        histogram.observe(seconds)
    labels = {"api": "Predict", "model": "m", "version": "4"}
    for bound in (*LATENCY_BUCKETS, float("inf")):
        le = floatToGoString(bound)
        ours = _value(metrics, "aether_inference_latency_seconds_bucket", {**labels, "le": le})
        expected = reference.get_sample_value("ref_latency_bucket", {"le": le})
        assert ours == expected or (not latencies and ours is None)
    if latencies:
        assert _value(metrics, "aether_inference_latency_seconds_count", labels) == len(latencies)
        assert _value(metrics, "aether_inference_latency_seconds_sum", labels) == pytest.approx(
            sum(latencies)
        )


def test_batch_rows_are_counted_per_version() -> None:
    metrics = ServingMetrics()
    observer = metrics.for_model("m", 2)
    for rows in (1, 3, 3, 40):
        observer.batch_started(size=1, rows=rows, queue_depth=0)
    labels = {"model": "m", "version": "2"}
    assert _value(metrics, "aether_inference_batch_size_count", labels) == 4
    assert _value(metrics, "aether_inference_batch_size_sum", labels) == 47
    assert _value(metrics, "aether_inference_batch_size_bucket", {**labels, "le": "4.0"}) == 3
    assert _value(metrics, "aether_inference_batch_size_bucket", {**labels, "le": "32.0"}) == 3
    assert _value(metrics, "aether_inference_batch_size_bucket", {**labels, "le": "+Inf"}) == 4
    text = metrics.render().decode()
    assert 'aether_inference_batch_size_bucket{le="64.0",model="m",version="2"} 4.0' in text
