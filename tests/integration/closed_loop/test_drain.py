"""SIGTERM to a data-plane process under closed-loop load loses no request: every request is either
answered OK or refused with UNAVAILABLE before the data plane accepted it, and readiness says NOT_SERVING
while it drains.

"Accepted" is read from the data plane's own record: its prediction log gets one entry for every request
its Predict handler took on (answered or failed), flushed before the process exits. So a request accepted
and then dropped would show as an entry that is not OK, or as an entry whose caller saw an error."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc
import grpc.aio
import numpy as np
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.aether.v1 import inference_pb2_grpc as pb_grpc
from clients.sdk.inference import build_predict_request
from control_plane.features.online_writer import OnlineWriter
from data_plane.models.spec import dump_model_config
from data_plane.registry_watch import save_snapshot
from tests.integration.closed_loop.models import slow_on_features
from tests.support import onnx_models
from tests.support.ports import refused_address
from tests.unit.data_plane.registry_builders import floats, snapshot, view, writable

pytestmark = pytest.mark.integration

STREAM = "drain:predictions"
FEATURES = view("driver_stats", floats(8))
CLIENTS = 8
DRAIN_DELAY_S = 0.5


@dataclass(frozen=True, slots=True)
class Sent:
    request_id: str
    sent_at: float
    done_at: float
    code: grpc.StatusCode


@pytest.fixture
async def data_plane(redis_url: str, tmp_path: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """A ``python -m data_plane`` process serving a slow model (one row at a time: ~10 ms each) from a
    static config, its features in Redis and its registry snapshot on disk."""
    client = redis.Redis.from_url(redis_url)
    OnlineWriter(client).write(
        writable(FEATURES), [["1"], ["2"]], np.ones((2, 8), np.float32), time.time_ns() // 1000
    )
    client.close()
    spec = onnx_models.save(
        slow_on_features(features=8),
        tmp_path / "slow.onnx",
        "slow",
        feature_refs=("driver_stats",),
        max_batch_size=1,
    )
    dump_model_config([spec], tmp_path / "models.json")
    save_snapshot(tmp_path / "registry_snapshot.pb", snapshot(FEATURES).SerializeToString())
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "data_plane",
        "--listen", "127.0.0.1:0",
        "--redis-url", redis_url,
        "--control-plane", refused_address(),  # nothing listens there: the snapshot serves
        "--snapshot-path", str(tmp_path / "registry_snapshot.pb"),
        "--model-config", str(tmp_path / "models.json"),
        "--prediction-log-sample-rate", "0",
        "--drain-delay-s", str(DRAIN_DELAY_S),
        "--drain-grace-s", "10",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={"AETHER_PREDICTION_LOG_STREAM": STREAM, "AETHER_HOME": str(tmp_path / "home"), "PATH": ""},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
        assert line.startswith("aether data plane listening on "), line
        yield process, line.split()[-1]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _load(address: str, stop: asyncio.Event, outcomes: list[Sent]) -> None:
    numbers = iter(range(1_000_000))

    async def caller(stub: pb_grpc.InferenceStub) -> None:
        while not stop.is_set():
            request_id = f"q{next(numbers)}"
            request = build_predict_request("slow", [{"driver_id": 1}], request_id=request_id)
            sent = time.monotonic()
            try:
                await stub.Predict(request, timeout=10)
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as error:
                code = error.code()
            outcomes.append(Sent(request_id, sent, time.monotonic(), code))
            if code == grpc.StatusCode.UNAVAILABLE:
                return  # refused: a client goes to another replica

    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]
        await asyncio.gather(*(caller(stub) for _ in range(CLIENTS)))


async def _health(address: str, stop: asyncio.Event, seen: list[tuple[float, str]]) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while not stop.is_set():
            try:
                answer = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            except grpc.aio.AioRpcError as error:
                status = error.code().name
            seen.append((time.monotonic(), status))
            await asyncio.sleep(0.02)


def _logged(redis_url: str) -> dict[str, dict[bytes, bytes]]:
    client = redis.Redis.from_url(redis_url)
    try:
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(STREAM))
    finally:
        client.close()
    return {fields[b"request_id"].decode(): fields for _, fields in entries}


async def test_sigterm_under_load_drains_without_losing_a_request(
    data_plane: tuple[asyncio.subprocess.Process, str], redis_url: str
) -> None:
    process, address = data_plane
    stop = asyncio.Event()
    outcomes: list[Sent] = []
    health: list[tuple[float, str]] = []
    load = asyncio.create_task(_load(address, stop, outcomes))
    await asyncio.sleep(1.0)  # under load
    assert outcomes and all(o.code == grpc.StatusCode.OK for o in outcomes)
    watching = asyncio.create_task(_health(address, stop, health))
    terminated_at = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 30) == 0
    stop.set()
    await asyncio.wait_for(asyncio.gather(load, watching), 20)

    codes = {o.code for o in outcomes}
    assert codes == {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
    answered = {o.request_id for o in outcomes if o.code == grpc.StatusCode.OK}
    refused = {o.request_id for o in outcomes if o.code == grpc.StatusCode.UNAVAILABLE}
    assert len(refused) == CLIENTS  # each caller went on until it was refused once
    # Everything sent before the signal was answered, and so was traffic during the drain delay.
    assert all(o.code == grpc.StatusCode.OK for o in outcomes if o.sent_at < terminated_at)
    assert any(o.code == grpc.StatusCode.OK and o.sent_at > terminated_at for o in outcomes)
    # Requests queued behind the model when the gate closed were answered after the first refusal.
    first_refusal = min(o.done_at for o in outcomes if o.code == grpc.StatusCode.UNAVAILABLE)
    assert any(o.code == grpc.StatusCode.OK and o.done_at > first_refusal for o in outcomes)

    # The data plane's own record: it took on exactly the requests that were answered, all OK.
    logged = _logged(redis_url)
    assert set(logged) == answered
    assert all(entry[b"ok"] == b"1" for entry in logged.values())
    assert not refused & set(logged)

    # Readiness: NOT_SERVING from the signal on (while requests were still being served).
    statuses = [status for _, status in health]
    assert "NOT_SERVING" in statuses and "SERVING" not in statuses[statuses.index("NOT_SERVING") :]
