"""The closed loop: ``concurrency`` workers, each sending its next request as soon as the previous one is
answered, for ``duration_s`` after a warm-up; latencies into a histogram with exact percentiles.

Requests are serialized once up front and sent as bytes (identity serializers), and answers are not
parsed: the generator shares the machine with the server under test, so it spends as little CPU as it
can, and the same for every server it is pointed at.

``token``: a bearer token sent with every request, for a data plane with auth on (its metadata is built
once, not per request); None sends none, as against the benchmarks' own tokenless data planes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc
import grpc.aio
import numpy as np

from clients.sdk.inference import build_infer_request, build_predict_request

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
PREDICT = "/aether.v1.Inference/Predict"
# Histogram edges in ms: log-spaced from 10 µs to 10 s.
HISTOGRAM_EDGES_MS = np.geomspace(0.01, 10_000, 61)


@dataclass(frozen=True, slots=True)
class LoadResult:
    concurrency: int
    duration_s: float
    requests: int
    errors: int
    throughput_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p99_9_ms: float
    mean_ms: float
    histogram_counts: list[int]
    first_error: str = ""

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        del out["histogram_counts"]
        return out


def model_infer_requests(model: str, width: int, count: int = 64, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [
        build_infer_request(
            model, {"input": rng.standard_normal((1, width)).astype(np.float32)}
        ).SerializeToString()
        for _ in range(count)
    ]


def predict_requests(
    deployment: str, entities: Sequence[str], key: str, count: int = 256, seed: int = 0
) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [
        build_predict_request(deployment, [{key: entities[int(i)]}]).SerializeToString()
        for i in rng.integers(0, len(entities), count)
    ]


async def closed_loop(
    target: str,
    method: str,
    requests: Sequence[bytes],
    concurrency: int,
    duration_s: float,
    warmup_s: float = 1.0,
    token: str | None = None,
) -> LoadResult:
    run = await _drive(target, method, requests, concurrency, duration_s, warmup_s, token)
    return run.result()


async def send_each(target: str, method: str, requests: Sequence[bytes], concurrency: int) -> int:
    """Sends every request once (``concurrency`` at a time), e.g. to have a server read each entity before
    it is measured; returns how many failed."""
    failed = 0
    queue = list(reversed(requests))
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)

        async def worker() -> None:
            nonlocal failed
            while queue:
                try:
                    await call(queue.pop(), timeout=30)
                except grpc.aio.AioRpcError:
                    failed += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failed


async def interleaved(
    targets: Sequence[tuple[str, str, Sequence[bytes]]],
    concurrency: int,
    slice_s: float,
    rounds: int,
    warmup_s: float = 0.3,
) -> list[LoadResult]:
    """Closed loops against several servers in turn, ``rounds`` slices of ``slice_s`` each (A, B, C, A,
    B, C, …), each server's slices pooled into one result. On a shared host whose speed drifts over
    seconds, servers measured one after the other see different machines; interleaved, they see the
    same one, so their ratio means something. ``targets`` are (address, method, requests)."""
    runs = [RunSamples(concurrency) for _ in targets]
    for _ in range(rounds):
        for run, (target, method, requests) in zip(runs, targets, strict=True):
            run.add(await _drive(target, method, requests, concurrency, slice_s, warmup_s))
    return [run.result() for run in runs]


@dataclass(slots=True)
class RunSamples:
    """Latencies (seconds) and errors of one or more measured slices of the same closed loop."""

    concurrency: int
    duration_s: float = 0.0
    samples: list[np.ndarray] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""

    def add(self, other: RunSamples) -> None:
        self.duration_s += other.duration_s
        self.samples += other.samples
        self.errors += other.errors
        self.first_error = self.first_error or other.first_error

    def result(self) -> LoadResult:
        samples = np.concatenate(self.samples) * 1000.0 if self.samples else np.zeros(0)
        if samples.size == 0:
            nan = float("nan")
            return LoadResult(
                self.concurrency, self.duration_s, 0, self.errors, 0.0, nan, nan, nan, nan, nan, [],
                self.first_error,
            )  # fmt: skip
        p50, p90, p99, p999 = np.percentile(samples, [50, 90, 99, 99.9])
        counts, _ = np.histogram(samples, HISTOGRAM_EDGES_MS)
        return LoadResult(
            concurrency=self.concurrency,
            duration_s=self.duration_s,
            requests=int(samples.size),
            errors=self.errors,
            throughput_rps=samples.size / self.duration_s,
            p50_ms=float(p50),
            p90_ms=float(p90),
            p99_ms=float(p99),
            p99_9_ms=float(p999),
            mean_ms=float(samples.mean()),
            histogram_counts=[int(c) for c in counts],
            first_error=self.first_error,
        )


async def _drive(
    target: str,
    method: str,
    requests: Sequence[bytes],
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    token: str | None = None,
) -> RunSamples:
    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        await call(requests[0], timeout=30, metadata=metadata)  # connect and warm the path
        latencies: list[list[float]] = [[] for _ in range(concurrency)]
        errors = [0]
        first_error: list[str] = []
        start = time.perf_counter()
        measure_from = start + warmup_s
        end = measure_from + duration_s

        async def worker(index: int) -> None:
            mine = latencies[index]
            i = index
            count = len(requests)
            perf = time.perf_counter
            while True:
                sent = perf()
                if sent >= end:
                    return
                try:
                    await call(requests[i % count], timeout=10, metadata=metadata)
                except grpc.aio.AioRpcError as exc:
                    if sent >= measure_from:
                        errors[0] += 1
                        if not first_error:
                            first_error.append(f"{exc.code().name}: {exc.details()}")
                    continue
                finally:
                    i += concurrency
                done = perf()
                if sent >= measure_from:
                    mine.append(done - sent)

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return RunSamples(
        concurrency,
        duration_s,
        [np.asarray(x) for x in latencies if x],
        errors[0],
        first_error[0] if first_error else "",
    )
