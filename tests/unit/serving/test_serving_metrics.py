"""The serving metrics: gauges read their owners when scraped, request counts land under the right
labels, and the histograms kept as plain numbers expose what prometheus_client's own would."""

from __future__ import annotations

import asyncio
import gc
import socket
import urllib.request
import weakref

import prometheus_client as prom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.utils import floatToGoString

from data_plane.admission import Admission
from data_plane.batching import BatchPolicy, DynamicBatcher
from data_plane.inline_gate import InlineGate
from data_plane.metrics import LATENCY_BUCKETS, UNRESOLVED, ServingMetrics, start_metrics_server
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


async def test_the_batch_wait_rows_gauge_shows_the_company_the_batcher_learnt() -> None:
    """Under load a request may wait for company (``data_plane.batch_company``): the gauge says how many
    rows an idle arrival waits for, so that a latency step can be told from a slow model."""
    metrics = ServingMetrics()
    batcher: DynamicBatcher[int, int] = DynamicBatcher(
        BatchPolicy(max_batch_size=8, max_queue_delay_s=0.05),
        lambda payloads: list(payloads),
        inline=InlineGate(limit_s=1.0, estimate_s=0.0, max_rows=8),
    )
    metrics.track_batch_wait_rows("m", 3, lambda held=batcher: held.wait_rows)  # type: ignore[misc]
    metrics.model_state("m", 3, ModelState.READY)
    labels = {"model": "m", "version": "3"}
    assert _value(metrics, "aether_inference_batch_wait_rows", labels) == 1  # nothing learnt yet

    seen: list[tuple[int, float | None]] = []  # (what the batcher waits for, what the gauge says)

    async def caller(index: int, under_load: DynamicBatcher[int, int]) -> None:
        for turn in range(30):
            for _ in range((index + turn) % 3):  # arrive in different loop turns, as gRPC hands them over
                await asyncio.sleep(0)
            await under_load.submit(turn, 1, "g", None)
            seen.append((under_load.wait_rows, _value(metrics, "aether_inference_batch_wait_rows", labels)))

    await asyncio.gather(*(caller(i, batcher) for i in range(4)))
    assert all(gauge == rows for rows, gauge in seen)
    assert max(rows for rows, _ in seen) > 1  # it learnt company under load
    alive = weakref.ref(batcher)
    metrics.model_state("m", 3, ModelState.UNLOADED)
    del batcher
    gc.collect()
    assert alive() is None  # the gauge no longer holds the batcher it read
    assert _value(metrics, "aether_inference_batch_wait_rows", labels) == 0


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


def _series(metrics: ServingMetrics) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every sample's name and labels (but ``le``: a histogram's buckets count as one series)."""
    return {
        (sample.name, tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le")))
        for family in metrics.registry.collect()
        for sample in family.samples
    }


def _versions(metrics: ServingMetrics) -> set[str]:
    return {dict(labels)["version"] for _, labels in _series(metrics) if "version" in dict(labels)}


def _serve(metrics: ServingMetrics, version: int) -> None:
    """What the manager and the request path record of a version loaded, then serving."""
    metrics.model_state("m", version, ModelState.LOADING)
    metrics.track_queue_depth("m", version, lambda: 3)
    metrics.model_state("m", version, ModelState.READY)
    metrics.for_model("m", version).batch_started(size=1, rows=2, queue_depth=0)
    metrics.request("Predict", "m", version, "OK", 0.001)
    metrics.request("ModelInfer", "m", version, "INVALID_ARGUMENT", None)


def test_a_released_version_leaves_no_series_behind() -> None:
    """Every version ever served kept its series (request counts, latency and batch-size histograms, queue
    depth, state: ~40 samples) after it was unloaded, so a version promoted a day grew /metrics for ever.
    (Not kept after the release here: keeping them is the next tests'.)"""
    metrics = ServingMetrics(released_series_s=0.0)
    metrics.track_in_flight("Predict", lambda: 1)
    metrics.request("Predict", UNRESOLVED, UNRESOLVED, "NOT_FOUND", None)  # names no version: kept
    metrics.request("Predict", "m", UNRESOLVED, "UNAVAILABLE", None)  # a deployment named m: kept
    _serve(metrics, 1)
    one_version = _series(metrics)
    for version in range(2, 101):  # each replaces the one before
        _serve(metrics, version)
        metrics.model_state("m", version - 1, ModelState.UNLOADED)
        assert str(version - 1) in _versions(metrics)  # still held: its requests finish in the grace
        metrics.version_released("m", version - 1)
    assert _versions(metrics) == {UNRESOLVED, "100"}
    assert len(_series(metrics)) == len(one_version)
    assert _value(metrics, "aether_inference_in_flight", {"api": "Predict"}) == 1
    total = "aether_inference_requests_total"
    assert _value(metrics, total, {"api": "Predict", "model": "", "version": "", "code": "NOT_FOUND"}) == 1
    assert _value(metrics, total, {"api": "Predict", "model": "m", "version": "", "code": "UNAVAILABLE"}) == 1
    assert _value(metrics, total, {"api": "Predict", "model": "m", "version": "100", "code": "OK"}) == 1
    assert _value(metrics, "aether_inference_queue_depth", {"model": "m", "version": "100"}) == 3


def test_a_request_answered_after_its_versions_release_goes_at_the_next_release() -> None:
    """A request that let go of its version before the release but is counted after it (one of a
    PredictBatch whose other requests ran on) makes that version's series anew: they must not stay."""
    metrics = ServingMetrics(released_series_s=0.0)
    _serve(metrics, 1)
    _serve(metrics, 2)
    metrics.model_state("m", 1, ModelState.UNLOADED)
    metrics.version_released("m", 1)
    metrics.request("Predict", "m", 1, "OK", 0.002)  # late
    assert _versions(metrics) == {"1", "2"}
    _serve(metrics, 3)
    metrics.model_state("m", 2, ModelState.UNLOADED)
    metrics.version_released("m", 2)
    assert _versions(metrics) == {"3"}
    metrics.model_state("m", 1, ModelState.LOADING)  # loaded again later (a rollback): counted afresh
    metrics.request("Predict", "m", 1, "OK", 0.002)
    count = "aether_inference_latency_seconds_count"
    assert _value(metrics, count, {"api": "Predict", "model": "m", "version": "1"}) == 1


def test_a_released_versions_series_stay_until_scraped_once_more_and_kept_long_enough() -> None:
    """Dropped at the release, the requests a version served since the last scrape were never seen. Its
    series stay until a scrape begun after the release was answered and ``released_series_s`` passed."""
    now = [0.0]
    metrics = ServingMetrics(released_series_s=60.0, clock=lambda: now[0])
    for version in (1, 2, 3, 4):
        metrics.model_state("m", version, ModelState.READY)
        metrics.request("Predict", "m", version, "OK", 0.001)

    def release(version: int) -> None:
        metrics.model_state("m", version, ModelState.UNLOADED)
        metrics.version_released("m", version)

    release(1)
    now[0] += 3600.0  # long past, but nothing scraped since: its final counts were never read
    release(2)
    counted = {
        dict(k)["version"] for name, k in _series(metrics) if name == "aether_inference_requests_total"
    }
    assert counted == {"1", "2", "3", "4"}  # that read was the scrape after 1's release (and 2's)
    release(3)  # 1 goes; 2 was read but has not been kept 60 s yet
    assert _versions(metrics) == {"2", "3", "4"}
    now[0] += 60.0
    release(4)
    assert _versions(metrics) == {"4"}  # 2 and 3 were read since their release, and kept 60 s


def test_metrics_are_served_on_an_ipv6_address_the_settings_accept() -> None:
    # The settings take "[::1]:PORT", and the port check binds it, but the metrics server bound IPv4 only
    # and the data plane exited with "Address family for hostname not supported".
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"this host has no IPv6 loopback ({exc})")
    metrics = ServingMetrics(CollectorRegistry())
    server = start_metrics_server(metrics, "[::1]:0")
    try:
        with urllib.request.urlopen(f"http://[::1]:{server.port}/metrics", timeout=5) as answer:
            assert answer.status == 200 and b"aether_" in answer.read()
    finally:
        server.stop()
