"""A replica whose event loop is hung still answers its scrape (``/metrics`` is a thread of its own), its
gauges frozen: read as they were, it looked idle, the fleet shrank, and the scale-down stopped the newest
replica, a healthy one, leaving the hung one listed. Now the data plane exports its loop's heartbeat age,
the autoscaler takes an old one for a stalled replica (its load left out), and a scale-down stops stalled
replicas first, then ones that missed a health probe, then the newest.

The hung loop is real: a data plane (``data_plane.server.start_server``) runs on an event loop in a thread
of this process, and the test blocks that loop with a blocking call, as a handler that blocks would.
SIGSTOP would not do: it stops the metrics thread with the loop, and the scrape fails instead."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from clients.env_values import ConfigurationError
from clients.errors import Unavailable
from clients.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from clients.sdk.auth import open_aio_channel
from clients.sdk.fleet import FleetReplica, read_endpoints
from clients.sdk.inference import build_infer_request
from control_plane.cli import fleet as fleet_cli
from control_plane.cli import numbers
from control_plane.cli.main import build_parser
from control_plane.cli.settings import CliSettings
from control_plane.deployments.autoscale_loop import (
    DEFAULT_STALLED_AFTER_S,
    HEARTBEAT_PERIOD_S,
    AutoscaleLoop,
    fetch_metrics,
    parse_metrics,
)
from control_plane.deployments.autoscaler import AutoscalerPolicy
from control_plane.deployments.fleet import FleetSettings, FleetStopped, autoscale_loop_for, run_fleet
from control_plane.deployments.replica import ReplicaSettings
from control_plane.deployments.replica_health import answers
from control_plane.deployments.replicas import ReplicaManager
from data_plane.loop_heartbeat import PERIOD_S
from data_plane.models.spec import dump_model_config
from data_plane.server import DataPlaneHandle, start_server
from data_plane.settings import DataPlaneSettings
from tests.integration.deployments.conftest import Plane
from tests.integration.deployments.test_replicas import _running, _until
from tests.support import onnx_models
from tests.support.ports import refused_address

pytestmark = pytest.mark.integration

#: Shorter than the default (5 s), so that the test's blocked loop does not have to stay blocked as long.
STALLED_AFTER_S = 1.0


def _settings(redis_url: str, folder: Path) -> DataPlaneSettings:
    return DataPlaneSettings(
        listen="127.0.0.1:0",
        metrics_listen="127.0.0.1:0",
        redis_url=redis_url,
        control_plane_addr=refused_address(),  # none: the planes serve no model here
        snapshot_path=folder / "registry_snapshot.pb",
        near_cache_mb=0.0,
    )


class ThreadedDataPlane:
    """A real data plane on an event loop of its own, in a thread: its loop can be blocked while this one
    runs on."""

    def __init__(self, settings: DataPlaneSettings) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="data-plane", daemon=True)
        self._thread.start()
        self.handle: DataPlaneHandle = asyncio.run_coroutine_threadsafe(
            start_server(settings), self._loop
        ).result(60)

    def block_loop(self) -> threading.Event:
        """Blocks the data plane's event loop with a blocking call on it, as a hung handler does, until the
        event returned is set (or a minute has passed)."""
        release = threading.Event()
        self._loop.call_soon_threadsafe(release.wait, 60.0)
        return release

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.handle.stop(0), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


@dataclass
class _Listed:
    number: int
    metrics_address: str
    serial: int


class RecordingFleet:
    """Stands in for the ReplicaManager in a decision: the replicas it lists are real data planes' metrics
    endpoints; it records how it is told to scale (the manager's side is tested with real replicas below)."""

    def __init__(self, *replicas: _Listed) -> None:
        self.replicas = replicas
        self.count = len(replicas)
        self.exited = asyncio.Event()
        self.scaled: list[tuple[int, frozenset[int]]] = []

    async def replace_failed(self, *, probe: bool = True) -> int:
        return 0

    async def scale_to(
        self, replicas: int, *, leaving_first: Collection[int] = (), stalled_endpoints: Collection[str] = ()
    ) -> None:
        self.scaled.append((replicas, frozenset(leaving_first)))


async def _loop_age(metrics_address: str) -> float:
    age = parse_metrics(await fetch_metrics(metrics_address)).loop_age_s
    assert age is not None, "the data plane does not export its loop's heartbeat age"
    return age


async def test_a_hung_loop_shows_on_the_scrape_and_its_replica_leaves_first(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    healthy = await start_server(_settings(redis_url, tmp_path / "healthy"))  # on this test's loop
    hung = await asyncio.to_thread(ThreadedDataPlane, _settings(redis_url, tmp_path / "hung"))
    metrics = [f"127.0.0.1:{plane.metrics_port}" for plane in (healthy, hung.handle)]
    fleet = RecordingFleet(*(_Listed(n, address, serial=10 + n) for n, address in enumerate(metrics)))
    policy = AutoscalerPolicy(min_replicas=1, max_replicas=2, up_window_s=0.0, down_window_s=0.0)
    loop = AutoscaleLoop(fleet, policy, stalled_after_s=STALLED_AFTER_S)  # type: ignore[arg-type]
    try:
        assert (await loop.measure()).stalled == 0
        for address in metrics:  # a loop that turns stamps every PERIOD_S
            assert await _loop_age(address) < PERIOD_S + 0.5

        release = hung.block_loop()
        try:
            deadline = time.monotonic() + 30
            while await _loop_age(metrics[1]) < STALLED_AFTER_S:  # its scrape answers all along
                assert time.monotonic() < deadline, "the blocked loop's heartbeat age never grew"
                await asyncio.sleep(0.1)
            assert not await answers(f"127.0.0.1:{hung.handle.port}", 0.5)  # its gRPC health does not

            # Idle, the fleet shrinks, and the stalled replica is the one to stop (not the newest by default).
            caplog.set_level(logging.WARNING, "aether.control_plane.autoscaler")
            assert await loop.tick() == 1
            assert fleet.scaled == [(1, frozenset({11}))]
            assert loop.events[-1].load.stalled == 1 and loop.events[-1].load.unmeasured == 0
            assert _stalled_warnings(caplog, metrics[1]) == [
                "its load is left out and a scale-down stops it first"
            ]

            # The fleet's stop looks once more, and its warning says what the stop does, not a scale-down.
            caplog.clear()
            assert (await loop.stalled_now())[0] == frozenset({11})
            assert _stalled_warnings(caplog, metrics[1]) == [
                "the fleet is stopping: it is killed at once, since a stalled loop never acts on a drain"
            ]
        finally:
            release.set()
        deadline = time.monotonic() + 30
        while await _loop_age(metrics[1]) >= STALLED_AFTER_S:  # released: it turns again
            assert time.monotonic() < deadline, "the loop's heartbeat never came back"
            await asyncio.sleep(0.1)
        assert (await loop.measure()).stalled == 0 and loop.stalled == frozenset()
    finally:
        await asyncio.to_thread(hung.stop)
        await healthy.stop(0)


def _stalled_warnings(caplog: pytest.LogCaptureFixture, metrics_address: str) -> list[str]:
    """What the warnings about the stalled replica at ``metrics_address`` say follows from the stall."""
    lead = f"at {metrics_address}: its event loop has not run for "
    return [
        message.split("(hung?); ", 1)[1]
        for message in (record.getMessage() for record in caplog.records)
        if lead in message
    ]


async def test_a_scale_down_stops_stalled_replicas_then_ones_that_missed_a_probe(plane: Plane) -> None:
    manager = ReplicaManager(
        ReplicaSettings(
            plane.address, plane.redis_url, plane.home / "replicas", start_timeout_s=60, health_timeout_s=0.5
        )
    )
    try:
        await manager.scale_to(3)
        first, second, third = manager.replicas
        # The autoscaler found the oldest stalled: it leaves, killed at once (it could not drain).
        await manager.scale_to(2, leaving_first={first.serial})
        assert manager.replicas == (second, third)
        assert first.process.returncode == -signal.SIGKILL and manager.hung == 1 and manager.killed == 0

        # The middle one misses a health probe (stopped for the pass): it leaves before the newest.
        second.process.send_signal(signal.SIGSTOP)
        try:
            assert await manager.replace_failed() == 0  # one miss is no verdict
            assert second.missed_probes == 1 and third.missed_probes == 0
        finally:
            second.process.send_signal(signal.SIGCONT)
        await manager.scale_to(1)
        assert manager.replicas == (third,)
        assert second.process.returncode == 0  # not stalled: drained on SIGTERM as any scale-down
    finally:
        await manager.close()


def test_the_stall_threshold_comes_from_the_fleets_variable_and_flag(tmp_path: Path) -> None:
    """It was a constant 5 s: a fleet serving slow batches on its loop could not raise it, nor one that wants
    a hung replica out sooner lower it."""
    env = {"AETHER_HOME": str(tmp_path), "AETHER_REPLICA_STALLED_AFTER_S": "2.5"}
    settings = FleetSettings.from_env(env)
    assert settings.stalled_after_s == 2.5
    manager = ReplicaManager(settings.replica_settings())
    assert autoscale_loop_for(settings, manager).stalled_after_s == 2.5  # what the fleet's loop judges by
    assert FleetSettings(home=tmp_path).stalled_after_s == DEFAULT_STALLED_AFTER_S == 5.0

    args = build_parser(CliSettings.from_env(env)).parse_args(["fleet", "run", "--stalled-after-s", "1.5"])
    assert fleet_cli.settings_from_args(args, env).stalled_after_s == 1.5

    # At or below the heartbeat's period, a loop that turns would be taken for stalled between its stamps.
    assert HEARTBEAT_PERIOD_S == PERIOD_S
    for bad in ("0.5", "0", "nan", "x"):
        with pytest.raises(ConfigurationError, match="AETHER_REPLICA_STALLED_AFTER_S"):
            FleetSettings.from_env({**env, "AETHER_REPLICA_STALLED_AFTER_S": bad})
        with pytest.raises(argparse.ArgumentTypeError):
            numbers.stall_seconds(bad)
    assert numbers.stall_seconds("0.75") == 0.75


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
async def test_a_stalled_worker_that_answered_its_last_probe_is_killed_at_once(
    plane: Plane, tmp_path: Path
) -> None:
    """A scale-down killed a stalled --workers replica's parent and the workers whose latest probe went
    unanswered; a worker whose loop stalled after it answered its probe (a pass kept long by another
    replica's probe, a short stall threshold) was left to its lifeline's SIGTERM, which a stalled loop never
    acts on, and lived on, on its ports and in the replica's folder, until the lifeline's grace. Its healthy
    sibling still drains.

    The stall is real: the worker runs a model whose one request spins for as long as it asks, on the
    worker's event loop (its warm-up made it inline)."""
    config = _spinning_config(tmp_path)
    settings = ReplicaSettings(
        plane.address, plane.redis_url, plane.home / "replicas", start_timeout_s=60, health_timeout_s=0.5,
        extra_args=("--workers", "2", "--model-config", str(config), "--inline-batch-below-us", "1000000"),
    )  # fmt: skip
    manager = ReplicaManager(settings)
    autoscaler = AutoscaleLoop(manager, AutoscalerPolicy(), stalled_after_s=STALLED_AFTER_S)
    try:
        await manager.scale_to(1)
        (replica,) = manager.replicas
        assert await manager.replace_failed() == 0 and replica.missed_probes == 0  # every worker answers
        sibling, stalled = replica.worker_pids
        async with open_aio_channel(replica.worker_addresses[1]) as channel:
            stub = oip_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
            request = build_infer_request("spin", {"x": np.full((1, 1), 1e9, np.float32)})
            spin = asyncio.ensure_future(stub.ModelInfer(request, timeout=600))
            try:
                deadline = time.monotonic() + 30
                while (await autoscaler.measure()).stalled == 0:
                    assert time.monotonic() < deadline, "the spinning worker's loop never stalled"
                    await asyncio.sleep(0.2)
                assert autoscaler.stalled == frozenset({replica.serial})
                assert replica.missed_probes == 0  # its latest probe was answered, before it stalled

                await manager.scale_to(
                    0, leaving_first=autoscaler.stalled, stalled_endpoints=autoscaler.stalled_endpoints
                )
                # Killed with its data plane, where its lifeline's grace (drain 0.5 + 5 s + 3 s) let it be.
                await _until(lambda: not _running(stalled), "the stalled worker lingers", 3)
            finally:
                spin.cancel()
        await _until(lambda: not _running(sibling), "the healthy worker never drained", 20)
        assert manager.hung == 1 and manager.killed == 0
    finally:
        await manager.close()


def _spinning_config(folder: Path) -> Path:
    """A static model config serving "spin" (:func:`tests.support.onnx_models.spinning`), warmed so that its
    batches run on the event loop: the warm-up's largest batch is timed from the second half's two."""
    config = folder / "models.json"
    spec = onnx_models.save(onnx_models.spinning(), folder / "spin.onnx", "spin", warmup_requests=8)
    dump_model_config([spec], config)
    return config


async def test_a_fleet_stop_kills_a_stalled_replica_at_once_and_drains_the_others(
    plane: Plane, tmp_path: Path
) -> None:
    """On stop every replica was told to drain (SIGTERM): a stalled one never acts on it, so the stop waited
    for its whole stop timeout (drain delay + grace + 10 s), killed it then, and `fleet run` said it was
    killed for not draining in time and exited 1. The fleet looks at its replicas' loops once more before
    it drains them: a stalled one is killed at once (counted as hung); a healthy one drains."""
    policy = AutoscalerPolicy(min_replicas=2, max_replicas=2, interval_s=600)
    config = _spinning_config(tmp_path)
    settings = FleetSettings(
        tmp_path / "home", plane.address, plane.redis_url, policy, stalled_after_s=STALLED_AFTER_S,
        replica_args=("--model-config", str(config), "--inline-batch-below-us", "1000000"),
    )  # fmt: skip
    stop = asyncio.Event()
    fleet = asyncio.create_task(run_fleet(settings, stop))
    try:
        deadline = time.monotonic() + 60
        while len(replicas := _listed(settings.endpoints_path)) < 2:
            assert time.monotonic() < deadline and not fleet.done(), "the fleet never listed its replicas"
            await asyncio.sleep(0.1)
        stalled, healthy = replicas
        async with open_aio_channel(stalled.address) as channel:
            stub = oip_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
            request = build_infer_request("spin", {"x": np.full((1, 1), 1e9, np.float32)})
            spin = asyncio.ensure_future(stub.ModelInfer(request, timeout=600))
            try:
                deadline = time.monotonic() + 30
                while await _loop_age(stalled.metrics_address) < STALLED_AFTER_S:
                    assert time.monotonic() < deadline, "the spinning replica's loop never stalled"
                    await asyncio.sleep(0.1)
                started = time.monotonic()
                stop.set()
                stopped = await asyncio.wait_for(fleet, 60)
            finally:
                spin.cancel()
        # Its stop timeout is 0.5 + 5 + 10 s; the healthy replica's drain takes its 0.5 s delay.
        assert time.monotonic() - started < 8, "the stop waited for the stalled replica's stop timeout"
        assert stopped == FleetStopped(killed=0, hung=0, stalled=1)
        # Its last line said "every replica drained; 1 hung replica(s) were killed and replaced while it
        # ran": the stalled one did not drain, was killed by the stop and replaced by nothing.
        assert fleet_cli.stop_report(stopped) == (
            "aether fleet stopped: 1 stalled replica(s) killed at once (an event loop that does not run"
            " cannot drain); every other replica drained",
            0,
        )
        assert not _running(stalled.pid) and not _running(healthy.pid)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(fleet, 60)


def _listed(path: Path) -> tuple[FleetReplica, ...]:
    try:
        return read_endpoints(path).replicas
    except Unavailable:  # not written yet
        return ()
