"""The autoscaler's loop with real ``python -m data_plane`` replicas: it scrapes their Prometheus endpoints,
scales up when closed-loop load queues requests (the new replica listed only once SERVING), and back down
(draining the replica it stops) once the load is gone and the down window has passed. Plus its reading of
the data plane's real metrics exposition, and a scrape that fails for one interval."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.aether.v1 import inference_pb2_grpc as pb_grpc
from clients.env_values import ConfigurationError
from clients.sdk.inference import build_predict_request
from control_plane.deployments.autoscale_loop import (
    AutoscaleLoop,
    interval_counts,
    p99_ms,
    parse_metrics,
    policy_values_from_env,
)
from control_plane.deployments.autoscaler import AutoscalerPolicy
from control_plane.deployments.replica import ReplicaSettings
from control_plane.deployments.replicas import ReplicaManager
from data_plane.metrics import ServingMetrics, start_metrics_server
from data_plane.models.spec import dump_model_config
from data_plane.models.version import ModelState
from tests.integration.closed_loop.models import slow_on_features
from tests.integration.deployments.conftest import Plane
from tests.support import onnx_models

POLICY = AutoscalerPolicy(
    min_replicas=1,
    max_replicas=2,
    target_queue_per_replica=2.0,
    target_p99_ms=60_000.0,  # latency never decides here: the queue does
    interval_s=0.3,
    up_window_s=0.0,
    down_window_s=1.0,
    max_step_up=1,
)
CLIENTS = 8


def test_the_loop_reads_the_data_planes_metrics() -> None:
    metrics = ServingMetrics()
    metrics.track_in_flight("Predict", lambda: 5)
    for seconds in [0.001] * 98 + [0.2, 0.2]:
        metrics.request("Predict", "m", 1, "OK", seconds)
    sample = parse_metrics(metrics.render().decode())
    assert sample.in_flight == 5.0
    assert p99_ms(sample.latency_buckets) == 250.0  # the 0.2 s requests' bucket's upper edge
    metrics.request("Predict", "m", 2, "OK", 0.0003)
    later = parse_metrics(metrics.render().decode())
    assert later.latency_buckets[float("inf")] == 101.0  # summed over every label set


def test_a_released_versions_series_going_away_is_no_restart() -> None:
    """The data plane drops a version's series once it released it. Summed over the replica's series
    first, the drop made the counts go down, taken for a restart: the other version's whole history (its
    old 2 s requests) counted as the interval's, a p99 of 2.5 s where the interval's requests took 3 ms."""
    metrics = ServingMetrics(released_series_s=0.0)  # dropped at the release
    for version, seconds, count in [(1, 1.0, 2000), (2, 0.003, 1000), (2, 2.0, 50)]:
        metrics.model_state("m", version, ModelState.READY)
        for _ in range(count):
            metrics.request("Predict", "m", version, "OK", seconds)
    before = parse_metrics(metrics.render().decode())
    metrics.model_state("m", 1, ModelState.UNLOADED)
    metrics.version_released("m", 1)
    for _ in range(1000):
        metrics.request("Predict", "m", 2, "OK", 0.003)
    metrics.request("Predict", "m", 3, "OK", 0.003)  # a version new since: counted whole
    after = parse_metrics(metrics.render().decode())
    counts = interval_counts(before, after)
    assert counts[float("inf")] == 1001.0 and p99_ms(counts) == 3.0


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("AETHER_MIN_REPLICAS", "abc", "a whole number >= 1"),
        ("AETHER_MIN_REPLICAS", "1.5", "a whole number >= 1"),
        ("AETHER_MIN_REPLICAS", "nan", "a whole number >= 1"),
        ("AETHER_MIN_REPLICAS", "0", "a whole number >= 1"),
        ("AETHER_MAX_REPLICAS", "-2", "a whole number >= 1"),
        ("AETHER_MAX_REPLICAS", "inf", "a whole number >= 1"),
        ("AETHER_TARGET_QUEUE_PER_REPLICA", "inf", "a number > 0"),
        ("AETHER_TARGET_QUEUE_PER_REPLICA", "0", "a number > 0"),
        ("AETHER_TARGET_P99_MS", "nan", "a number > 0"),
        ("AETHER_AUTOSCALE_INTERVAL_S", "nan", "a number > 0"),
        ("AETHER_AUTOSCALE_INTERVAL_S", "0", "a number > 0"),
        ("AETHER_AUTOSCALE_INTERVAL_S", "-1", "a number > 0"),
        ("AETHER_AUTOSCALE_INTERVAL_S", "30s", "a number > 0"),
        ("AETHER_AUTOSCALE_UP_WINDOW_S", "-1", "a number >= 0"),
        ("AETHER_AUTOSCALE_DOWN_WINDOW_S", "inf", "a number >= 0"),
    ],
)
def test_a_bad_policy_variable_is_refused_naming_it_and_its_range(
    variable: str, value: str, expected: str
) -> None:
    """Read with bare int()/float(), these were ValueError text naming neither the variable nor the range
    ("invalid literal for int() with base 10: 'abc'"), or accepted (nan, inf, a negative window)."""
    with pytest.raises(ConfigurationError) as refused:
        policy_values_from_env({variable: value})
    assert str(refused.value) == f"{variable}: expected {expected}, got {value!r}"


def test_the_policy_variables_set_their_fields_and_empty_ones_nothing() -> None:
    env = {
        "AETHER_MIN_REPLICAS": " 2 ",
        "AETHER_MAX_REPLICAS": "8",
        "AETHER_TARGET_QUEUE_PER_REPLICA": "0.5",
        "AETHER_TARGET_P99_MS": "25",
        "AETHER_AUTOSCALE_INTERVAL_S": "0.25",
        "AETHER_AUTOSCALE_UP_WINDOW_S": "0",
        "AETHER_AUTOSCALE_DOWN_WINDOW_S": "",
    }
    values = policy_values_from_env(env)
    assert values == {
        "min_replicas": 2,
        "max_replicas": 8,
        "target_queue_per_replica": 0.5,
        "target_p99_ms": 25.0,
        "interval_s": 0.25,
        "up_window_s": 0.0,
    }
    assert isinstance(values["min_replicas"], int) and AutoscalerPolicy(**values).down_window_s == 300.0  # type: ignore[arg-type]


@dataclass
class _Listed:
    number: int
    metrics_address: str
    serial: int


class FakeFleet:
    """Stands in for the ReplicaManager: the replicas the loop scrapes, each a real data-plane metrics
    endpoint. Not real processes, because a real replica's past latencies cannot be set by the test (nor
    the port the OS gives a replica's metrics endpoint)."""

    def __init__(self, *replicas: _Listed) -> None:
        self.replicas = replicas
        self.count = len(replicas)


async def test_a_failed_scrape_does_not_bring_a_replicas_old_latencies_back() -> None:
    metrics = [ServingMetrics(), ServingMetrics()]
    servers = [start_metrics_server(m, "127.0.0.1:0") for m in metrics]
    for _ in range(500):  # long ago: replica 0 served a burst of 2 s requests (a cold start, say)
        metrics[0].request("Predict", "m", 1, "OK", 2.0)
    fleet = FakeFleet(*(_Listed(n, f"127.0.0.1:{s.port}", serial=n) for n, s in enumerate(servers)))
    loop = AutoscaleLoop(fleet, POLICY)  # type: ignore[arg-type]

    def serve_fast() -> None:
        for m in metrics:
            for _ in range(1000):
                m.request("Predict", "m", 1, "OK", 0.003)

    try:
        await loop.measure()  # the baseline: the burst is history
        serve_fast()
        assert (await loop.measure()).p99_ms == 3.0
        port = servers[0].port
        servers[0].stop()  # replica 0's endpoint is unreachable for one interval
        serve_fast()
        assert (await loop.measure()).p99_ms == 3.0  # replica 1 only
        servers[0] = start_metrics_server(metrics[0], f"127.0.0.1:{port}")
        serve_fast()
        assert (await loop.measure()).p99_ms == 3.0  # not the burst's 2.5 s bucket
    finally:
        for server in servers:
            server.stop()


async def test_a_replica_that_takes_a_stopped_ones_number_and_port_is_measured_as_a_new_one() -> None:
    """A new replica reuses the number (and folder) of one that was stopped, and the OS may give its metrics
    endpoint the same port. Keyed by number and endpoint, the new replica's counts were taken minus the old
    one's: here only its 5 slow requests were counted, a p99 of 2.5 s, where its 1005 requests have 3 ms."""
    old, new = ServingMetrics(), ServingMetrics()
    server = start_metrics_server(old, "127.0.0.1:0")
    address = f"127.0.0.1:{server.port}"
    fleet = FakeFleet(_Listed(0, address, serial=0))
    loop = AutoscaleLoop(fleet, POLICY)  # type: ignore[arg-type]
    try:
        for _ in range(1000):
            old.request("Predict", "m", 1, "OK", 0.003)
        assert (await loop.measure()).p99_ms == 3.0
        server.stop()  # scaled down; then up again: the new replica 0 serves on the same port
        for _ in range(1000):
            new.request("Predict", "m", 1, "OK", 0.003)
        for _ in range(5):
            new.request("Predict", "m", 1, "OK", 2.0)
        server = start_metrics_server(new, address)
        fleet.replicas = (_Listed(0, address, serial=1),)
        assert (await loop.measure()).p99_ms == 3.0
    finally:
        server.stop()


async def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def _load(address: str, stop: asyncio.Event) -> int:
    answered = 0

    async def caller(stub: pb_grpc.InferenceStub) -> None:
        nonlocal answered
        while not stop.is_set():
            request = build_predict_request(
                "slow", [{"driver_id": 1}], request_features=[{f"f{i}": 0.5 for i in range(4)}]
            )
            await stub.Predict(request, timeout=20)
            answered += 1

    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]
        await asyncio.gather(*(caller(stub) for _ in range(CLIENTS)))
    return answered


async def _health(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return int(answer.status)


async def test_load_scales_the_replicas_up_and_its_absence_back_down(plane: Plane, tmp_path: Path) -> None:
    # A slow model on request-time features only, one row at a time (~10 ms each): 8 callers keep ~8
    # requests in flight on one replica, four times the target of 2.
    spec = onnx_models.save(
        slow_on_features(), tmp_path / "slow.onnx", "slow",
        feature_refs=tuple(f"request:f{i}" for i in range(4)), max_batch_size=1,
    )  # fmt: skip
    dump_model_config([spec], tmp_path / "models.json")
    extra_args = ("--model-config", str(tmp_path / "models.json"), "--prediction-log-sample-rate", "0")
    replicas = ReplicaManager(
        ReplicaSettings(
            plane.address,
            plane.redis_url,
            tmp_path / "replicas",
            extra_args=(*extra_args, "--drain-delay-s", "0.1"),
        )
    )
    loop = AutoscaleLoop(replicas, POLICY)
    stop = asyncio.Event()
    load: asyncio.Task[int] | None = None
    try:
        loop.start()
        await _wait(lambda: replicas.count == 1, 60, "the loop starts min_replicas")
        first = replicas.replicas[0]
        assert first.metrics_address

        load = asyncio.create_task(_load(first.address, stop))
        await _wait(lambda: replicas.count == 2, 60, "load scales up")
        second = replicas.replicas[1]
        assert await _health(second.address) == health_pb2.HealthCheckResponse.SERVING
        up = next(e for e in loop.events if e.replicas == 2)
        assert up.load.queue_depth >= 4 and up.load.replicas == 1
        assert up.load.p99_ms is not None and up.load.p99_ms >= 5.0  # the slow model's requests

        stop.set()
        assert await load > 0
        load = None
        await _wait(lambda: replicas.count == 1, 30, "no load scales down")
        assert replicas.replicas[0] is first  # the newest replica is the one stopped: unlisted first,
        assert await asyncio.wait_for(second.process.wait(), 30) == 0  # then drained on SIGTERM
        down = next(e for e in loop.events if e.replicas == 1 and e.at_s > up.at_s)
        assert down.load.queue_depth == 0
        assert down.at_s - up.at_s >= POLICY.down_window_s  # held for the down window first
    finally:
        stop.set()
        if load is not None:
            load.cancel()
        await loop.stop()
        await replicas.close()


async def test_what_a_version_served_since_the_last_scrape_is_counted_after_its_release() -> None:
    """The data plane dropped a released version's series at the release: the 100 slow requests it
    served after the autoscaler's last scrape were never counted (a series that is gone counts nothing),
    and the interval's p99 was none at all instead of their 2.5 s bucket."""
    now = [0.0]
    metrics = ServingMetrics(clock=lambda: now[0])
    server = start_metrics_server(metrics, "127.0.0.1:0")
    loop = AutoscaleLoop(FakeFleet(_Listed(0, f"127.0.0.1:{server.port}", serial=0)), POLICY)  # type: ignore[arg-type]

    def release(version: int) -> None:
        metrics.model_state("m", version, ModelState.UNLOADED)
        metrics.version_released("m", version)

    def versions() -> set[str]:
        return {dict(key)["version"] for key in parse_metrics(metrics.render().decode()).latency_series}

    try:
        for version in (1, 2):
            metrics.model_state("m", version, ModelState.READY)
            metrics.request("Predict", "m", version, "OK", 0.003)
        assert (await loop.measure()).p99_ms == 3.0
        for _ in range(100):
            metrics.request("Predict", "m", 1, "OK", 2.0)
        release(1)
        assert (await loop.measure()).p99_ms == 2500.0  # its final requests, counted
        assert (await loop.measure()).p99_ms is None  # once
        # Kept no longer than needed: they go at the model's next release past the kept time.
        now[0] += metrics.released_series_s
        metrics.model_state("m", 3, ModelState.READY)
        release(2)
        assert versions() == {"2"}  # 2's final counts are still to be scraped (this one reads them)
    finally:
        server.stop()
