"""The prediction log: sampled Predict requests (features, outputs, model version, variant, request id,
entity keys) appended to a Redis Stream, for drift monitoring and for joining labels that arrive later.

It never blocks or fails a request: :meth:`PredictionLog.record` only appends to a bounded in-memory
buffer (dropping, and counting, when full); a background task drains the buffer with pipelined
``XADD <stream> MAXLEN ~ <n> * ...`` on a connection of its own, and drops (and counts) a batch when
Redis is down. Shadow variants' answers are always logged, with the served answer, under one request id.

Entry fields: ``request_id``, ``deployment``, ``model``, ``version``, ``variant``, ``role`` (served or
shadow), ``routing_key``, ``ts_us``, ``entities`` (JSON list of join-key maps), ``features`` (raw
row-major bytes) with ``features_dtype`` and ``features_shape`` ("rows,cols"), and per output
``output:<name>`` (raw bytes) with ``output:<name>:dtype`` / ``output:<name>:shape``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from data_plane.redis_client import RedisClient, RedisCommandError, RedisUnavailable, pack_command
from data_plane.runtime.base import Array

_log = logging.getLogger("aether.data_plane.prediction_log")


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    request_id: str
    deployment: str
    model: str
    version: int
    variant: str
    role: str  # "served" or "shadow"
    routing_key: str
    entities: Sequence[Mapping[str, str]]
    features: Array
    outputs: Mapping[str, Array]
    ts_us: int

    def fields(self) -> list[bytes]:
        out: list[bytes] = []

        def put(name: str, value: bytes | str) -> None:
            out.append(name.encode())
            out.append(value if isinstance(value, bytes) else value.encode())

        put("request_id", self.request_id)
        put("deployment", self.deployment)
        put("model", self.model)
        put("version", str(self.version))
        put("variant", self.variant)
        put("role", self.role)
        put("routing_key", self.routing_key)
        put("ts_us", str(self.ts_us))
        put("entities", json.dumps([dict(e) for e in self.entities], separators=(",", ":")))
        put("features", self.features.tobytes())
        put("features_dtype", self.features.dtype.name)
        put("features_shape", ",".join(str(d) for d in self.features.shape))
        for name, array in self.outputs.items():
            put(f"output:{name}", array.tobytes())
            put(f"output:{name}:dtype", array.dtype.name)
            put(f"output:{name}:shape", ",".join(str(d) for d in array.shape))
        return out


class PredictionLog:
    def __init__(
        self,
        redis: RedisClient,
        stream: str,
        *,
        sample_rate: float,
        maxlen: int,
        buffer_size: int = 10_000,
        batch_size: int = 256,
        timeout_s: float = 1.0,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self._redis = redis
        self._stream = stream.encode()
        self._maxlen = str(maxlen).encode()
        self.sample_rate = sample_rate
        self._buffer: collections.deque[PredictionRecord] = collections.deque()
        self._buffer_size = buffer_size
        self._batch_size = batch_size
        self._timeout_s = timeout_s
        self._on_drop = on_drop or (lambda count: None)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.dropped = 0

    def sampled(self) -> bool:
        rate = self.sample_rate
        return rate >= 1.0 or (rate > 0.0 and random.random() < rate)

    def record(self, record: PredictionRecord) -> None:
        """Queues one entry; never blocks, never raises."""
        if len(self._buffer) >= self._buffer_size:
            self._drop(1)
            return
        self._buffer.append(record)
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="prediction-log")

    async def stop(self, flush_timeout_s: float = 1.0) -> None:
        """Flushes what is buffered (within the timeout), then stops."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(flush_timeout_s):
                while self._buffer:
                    await self._flush()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    def _drop(self, count: int) -> None:
        self.dropped += count
        self._on_drop(count)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._buffer:
                await self._flush()

    async def _flush(self) -> None:
        batch = [self._buffer.popleft() for _ in range(min(self._batch_size, len(self._buffer)))]
        commands = [
            pack_command(b"XADD", self._stream, b"MAXLEN", b"~", self._maxlen, b"*", *record.fields())
            for record in batch
        ]
        results = await asyncio.gather(
            *(self._redis.execute_packed(c, self._timeout_s) for c in commands), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        self.written += len(results) - len(failures)
        if failures:
            self._drop(len(failures))
            error = failures[0]
            if isinstance(error, (RedisUnavailable, RedisCommandError)):
                _log.warning("prediction log dropped %d entries: %s", len(failures), error)
            else:
                _log.error("prediction log dropped %d entries", len(failures), exc_info=error)
            await asyncio.sleep(0.5)  # Redis is struggling: do not hammer it; the buffer bounds memory


def now_us() -> int:
    return time.time_ns() // 1000
