"""The prediction log never blocks or fails a request: entries reach the stream when Redis is up and are
dropped (counted) when it is down; entries that trickle in share one Redis call (the linger) and a full
batch does not wait for it; the native TensorRT engine cache is keyed by GPU and version."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import redis

from data_plane.prediction_log import PredictionLog, PredictionRecord
from data_plane.redis_client import RedisClient
from data_plane.runtime.tensorrt_engine import engine_cache_path
from tests.support.ports import refused_address
from tests.support.prediction_log import writes_refused
from tests.support.redis_server import RedisServer, user_without_eval
from tests.support.tcp_proxy import AnswerLosingProxy


def _record(request_id: str) -> PredictionRecord:
    return PredictionRecord(
        request_id=request_id, deployment="d", model="m", version=3, variant="blue", role="served",
        routing_key="user-1", entities=[{"driver_id": "7"}],
        features=np.arange(4, dtype=np.float32).reshape(1, 4),
        outputs={"score": np.array([[0.5]], np.float32)},
        ts_us=1,
    )  # fmt: skip


async def test_entries_reach_a_capped_stream(redis_url: str) -> None:
    client = RedisClient(redis_url, pool_size=1)
    log = PredictionLog(client, "preds", sample_rate=1.0, maxlen=1000)
    log.start()
    for i in range(5):
        log.record(_record(f"r{i}"))
    await log.stop()
    await client.close()
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], redis.Redis.from_url(redis_url).xrange("preds"))
    assert [e[1][b"request_id"] for e in entries] == [b"r0", b"r1", b"r2", b"r3", b"r4"]
    first = entries[0][1]
    assert first[b"version"] == b"3" and first[b"features_shape"] == b"1,4"
    assert np.frombuffer(first[b"output:score"], np.float32).tolist() == [0.5]
    assert log.written == 5 and log.dropped == 0


async def test_entries_reach_the_stream_as_a_redis_user_without_eval(redis_url: str) -> None:
    """The batches run by EVALSHA (the script loaded when Redis answers NOSCRIPT: here its scripts were
    flushed, as a restart does), never EVAL: a Redis user granted EVALSHA and SCRIPT LOAD only, what the
    control plane's streaming needs of the same URL, had every write refused NOPERM and dropped."""
    admin = redis.Redis.from_url(redis_url)
    with user_without_eval(redis_url) as url:
        client = RedisClient(url, pool_size=1)
        log = PredictionLog(client, "preds-no-eval", sample_rate=1.0, maxlen=1000, batch_size=2)
        try:
            log.start()
            for i in range(4):
                admin.script_flush()  # each batch finds Redis without the script
                log.record(_record(f"r{i}"))
                await _wait_written(log, i + 1, timeout_s=5.0)
            await log.stop()
        finally:
            await client.close()
    assert log.written == 4 and log.dropped == 0
    assert admin.xlen("preds-no-eval") == 4


async def test_a_batch_that_finds_no_script_loads_it_and_resends_within_one_timeout(redis_url: str) -> None:
    """After NOSCRIPT the script's load and the batch sent again share the batch's one write timeout:
    with a timeout each, a batch through a slow path (here 0.4 s a round trip, the three calls 1.2 s) was
    written after more than its 1 s, and a Redis that answered each call just under the timeout held a
    batch (and ``stop()``'s flush) three times as long. Now it fails at the timeout, counted dropped."""
    admin = redis.Redis.from_url(redis_url)
    admin.script_flush()  # as a restart does: the first call is answered NOSCRIPT
    proxy = AnswerLosingProxy(redis_url.removeprefix("redis://").split("/")[0])
    proxy.delay_requests(0.4)
    client = RedisClient(f"redis://{proxy.address}", pool_size=1)
    log = PredictionLog(client, "preds-slow-path", sample_rate=1.0, maxlen=1000, timeout_s=1.0, linger_s=0.0)
    try:
        log.start()
        started = asyncio.get_running_loop().time()
        log.record(_record("r0"))
        async with asyncio.timeout(5.0):
            while log.written + log.dropped < 1:  # noqa: ASYNC110 (counters the log owns; no event)
                await asyncio.sleep(0.005)
        elapsed = asyncio.get_running_loop().time() - started
        await log.stop()
    finally:
        await client.close()
        proxy.close()
    assert (log.written, log.dropped) == (0, 1)
    assert elapsed < 1.15  # the 1 s timeout, and the slack of a loaded host


async def test_stop_lets_the_batch_in_flight_finish_and_counts_every_entry(redis_url: str) -> None:
    """Every entry recorded before stop() is written and counted, with several batches still buffered.
    (stop() used to cancel the drain task even while it was sending a batch, which then went uncounted;
    that race is timing-dependent, so this asserts the invariant rather than reproducing it.)"""
    client = RedisClient(redis_url, pool_size=1)
    log = PredictionLog(client, "preds", sample_rate=1.0, maxlen=100_000, batch_size=64)
    log.start()
    total = 605
    for i in range(total):
        log.record(_record(f"r{i}"))
    await asyncio.sleep(0)  # let the drain task start its first batch
    await log.stop(flush_timeout_s=10.0)
    await client.close()
    assert log.written == total and log.dropped == 0
    assert redis.Redis.from_url(redis_url).xlen("preds") == total


def _script_calls(redis_url: str) -> int:
    stats = redis.Redis.from_url(redis_url).info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def _wait_written(log: PredictionLog, count: int, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while log.written < count:  # noqa: ASYNC110 (polling a counter the log owns; no event to wait on)
            await asyncio.sleep(0.001)


async def test_entries_that_trickle_in_share_one_redis_call(redis_url: str) -> None:
    calls: dict[float, int] = {}
    for linger_s in (0.0, 0.2):
        client = RedisClient(redis_url, pool_size=1)
        log = PredictionLog(
            client, f"preds-linger-{linger_s}", sample_rate=0.0, maxlen=1000, linger_s=linger_s
        )
        log.start()
        before = _script_calls(redis_url)
        for i in range(5):
            log.record(_record(f"r{i}"))
            await asyncio.sleep(0.01)  # one request at a time, as from a single caller
        await _wait_written(log, 5, timeout_s=5.0)
        calls[linger_s] = _script_calls(redis_url) - before
        await log.stop()
        await client.close()
    assert calls[0.0] == 5  # without the linger, every entry is a round trip of its own
    assert calls[0.2] == 1


async def test_a_full_batch_is_written_without_waiting_for_the_linger(redis_url: str) -> None:
    client = RedisClient(redis_url, pool_size=1)
    log = PredictionLog(client, "preds-full", sample_rate=0.0, maxlen=1000, batch_size=4, linger_s=30.0)
    log.start()
    for i in range(4):
        log.record(_record(f"r{i}"))
    await _wait_written(log, 4, timeout_s=2.0)  # far sooner than the 30 s linger
    log.record(_record("r4"))  # alone, it waits for the linger ...
    await asyncio.sleep(0.05)
    assert log.written == 4
    async with asyncio.timeout(2.0):
        await log.stop()  # ... but stopping writes it at once
    await client.close()
    assert log.written == 5 and redis.Redis.from_url(redis_url).xlen("preds-full") == 5


async def test_entries_beyond_a_batch_are_written_without_further_requests(redis_url: str) -> None:
    """Recorded at once, 2.5 batches: the half batch left after the full ones is written after its linger
    even though nothing else is ever recorded."""
    client = RedisClient(redis_url, pool_size=1)
    log = PredictionLog(client, "preds-rest", sample_rate=0.0, maxlen=1000, batch_size=4, linger_s=0.01)
    log.start()
    for i in range(10):
        log.record(_record(f"r{i}"))
    await _wait_written(log, 10, timeout_s=2.0)
    await log.stop()
    await client.close()


async def test_with_redis_down_entries_are_dropped_and_counted_without_raising() -> None:
    client = RedisClient(f"redis://{refused_address()}/0", pool_size=1)
    drops: list[int] = []
    log = PredictionLog(client, "preds", sample_rate=1.0, maxlen=10, buffer_size=2, on_drop=drops.append)
    log.start()
    for i in range(4):  # two fit the buffer; the others are dropped at once
        log.record(_record(f"r{i}"))
    await asyncio.sleep(0.1)
    await log.stop(flush_timeout_s=0.2)
    await client.close()
    assert log.written == 0 and log.dropped == 4 and sum(drops) == 4


async def test_entries_left_when_stop_gives_up_are_counted_dropped_with_redis_down() -> None:
    """stop() used to cancel the drain task in its 0.5 s back-off after a failed batch: the entries still
    buffered were neither written nor counted (aether_prediction_log_dropped missed them)."""
    client = RedisClient(f"redis://{refused_address()}/0", pool_size=1)
    drops: list[int] = []
    log = PredictionLog(client, "preds", sample_rate=0.0, maxlen=10, batch_size=64, on_drop=drops.append)
    log.start()
    for i in range(1000):
        log.record(_record(f"r{i}"))
    async with asyncio.timeout(2.0):
        while log.dropped == 0:  # noqa: ASYNC110 (the log's own counter; no event to wait on)
            await asyncio.sleep(0.001)  # the first batch failed: the log is pausing
    await log.stop(flush_timeout_s=0.3)
    log.record(_record("late"))  # after stop() nothing drains the buffer: counted at once
    await client.close()
    assert log.written == 0 and log.dropped == 1001 and sum(drops) == 1001


async def test_a_batch_cut_off_on_its_way_by_stop_is_counted_dropped(redis_url: str) -> None:
    """Redis holds the batch's call (CLIENT PAUSE) past stop()'s timeout: the batch on its way and those
    still buffered are counted dropped. (Redis may still append the cut-off batch once it resumes; the
    log cannot know, and counts it lost.)"""
    admin = redis.Redis.from_url(redis_url)
    client = RedisClient(redis_url, pool_size=1)
    log = PredictionLog(client, "preds", sample_rate=0.0, maxlen=10_000, batch_size=64, timeout_s=10.0)
    admin.client_pause(5000, all=True)
    try:
        log.start()
        for i in range(300):
            log.record(_record(f"r{i}"))
        await asyncio.sleep(0.05)  # the first batch is on its way, held by the pause
        await log.stop(flush_timeout_s=0.2)
    finally:
        admin.client_unpause()
    await client.close()
    assert log.written == 0 and log.dropped == 300


def test_engine_cache_paths_name_the_gpu_and_the_tensorrt_version(tmp_path: Path) -> None:
    a = engine_cache_path(tmp_path, "NVIDIA H100 80GB HBM3", "10.3.0", "ab" * 32, 32, input_shapes=[])
    b = engine_cache_path(tmp_path, "NVIDIA A10G", "10.3.0", "ab" * 32, 32, input_shapes=[])
    c = engine_cache_path(tmp_path, "NVIDIA H100 80GB HBM3", "10.4.0", "ab" * 32, 32, input_shapes=[])
    assert len({a, b, c}) == 3 and a.name.startswith("NVIDIA_H100_80GB_HBM3-trt10.3.0-")


def _entry(request_id: str, deployment: str, ts_us: int) -> PredictionRecord:
    return PredictionRecord(
        request_id=request_id, deployment=deployment, model="m", version=3, variant="green",
        role="served", routing_key="", ts_us=ts_us,
    )  # fmt: skip


async def test_entries_dropped_while_redis_refuses_writes_are_marked_in_the_stream_once_it_takes_them(
    redis_url: str,
) -> None:
    """A batch Redis refused (OOM under noeviction) used to vanish but for a counter: readers of the
    stream saw no hole, and the canary controller judged a step on what got through. Now the first batch
    written afterwards starts with a gap marker per deployment: how many of its entries were dropped and
    the first and last of their times."""
    client = RedisClient(redis_url, pool_size=1)
    log = PredictionLog(client, "preds", sample_rate=0.0, maxlen=1000, linger_s=0.0)
    log.start()
    log.record(_entry("before", "eta", 100))
    async with asyncio.timeout(2.0):
        while log.written < 1:  # noqa: ASYNC110 (the log's own counter; no event to wait on)
            await asyncio.sleep(0.001)
    with writes_refused(redis_url):
        for i, (deployment, ts) in enumerate([("eta", 200), ("eta", 300), ("other", 250)]):
            log.record(_entry(f"lost{i}", deployment, ts))
            async with asyncio.timeout(2.0):
                while log.dropped < i + 1:  # noqa: ASYNC110
                    await asyncio.sleep(0.001)
        await asyncio.sleep(0.6)  # past the back-off: the markers alone were tried, and refused too
        assert log.dropped == 3 and set(log.pending_gaps) == {"eta", "other"}
    log.record(_entry("after", "eta", 400))
    await log.stop()
    await client.close()
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], redis.Redis.from_url(redis_url).xrange("preds"))
    roles = [(f[b"role"], f[b"deployment"], f.get(b"request_id")) for _, f in entries]
    assert roles[0] == (b"served", b"eta", b"before") and roles[-1] == (b"served", b"eta", b"after")
    markers = {f[b"deployment"]: f for _, f in entries if f[b"role"] == b"gap"}
    assert len(roles) == 4 and set(markers) == {b"eta", b"other"}  # one marker each, before "after"
    eta, other = markers[b"eta"], markers[b"other"]
    assert (eta[b"dropped"], eta[b"first_ts_us"], eta[b"last_ts_us"]) == (b"2", b"200", b"300")
    assert (other[b"dropped"], other[b"first_ts_us"], other[b"last_ts_us"]) == (b"1", b"250", b"250")
    assert log.written == 2 and log.dropped == 3 and log.pending_gaps == {}


async def test_entries_dropped_from_a_full_buffer_are_marked_before_the_next_entries(redis_url: str) -> None:
    client = RedisClient(redis_url, pool_size=1)
    log = PredictionLog(client, "preds", sample_rate=0.0, maxlen=1000, buffer_size=2, linger_s=0.0)
    for i in range(4):  # not started yet: the buffer takes two, the others are dropped
        log.record(_entry(f"r{i}", "eta", 10 + i))
    log.start()
    await log.stop()
    await client.close()
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], redis.Redis.from_url(redis_url).xrange("preds"))
    fields = [f for _, f in entries]
    assert [f[b"role"] for f in fields] == [b"gap", b"served", b"served"]
    marker = fields[0]
    assert (marker[b"dropped"], marker[b"first_ts_us"], marker[b"last_ts_us"]) == (b"2", b"12", b"13")


def _log_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "aether.data_plane.prediction_log"]


async def test_a_redis_outage_is_logged_when_it_starts_and_ends_not_per_failed_write(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With Redis down, the loop that retries the gap markers logged "prediction log dropped 0 entries"
    twice a second for the whole outage. Now the outage's first failed write is a warning, the others
    are at DEBUG, and the first write after it says how long it lasted and how many entries it cost."""
    server = RedisServer()
    server.start()
    client = RedisClient(server.url, pool_size=1)
    log = PredictionLog(client, "preds", sample_rate=0.0, maxlen=1000, linger_s=0.0)
    caplog.set_level(logging.DEBUG, logger="aether.data_plane.prediction_log")
    log.start()
    try:
        log.record(_entry("before", "eta", 100))
        async with asyncio.timeout(10.0):
            while log.written < 1:  # noqa: ASYNC110 (the log's own counter; no event to wait on)
                await asyncio.sleep(0.001)
        server.stop()
        for i in range(3):
            log.record(_entry(f"lost{i}", "eta", 200 + i))
        async with asyncio.timeout(20.0):  # several failed writes: the entries', then the markers' alone
            while log.dropped < 3 or len(_log_lines(caplog)) < 5:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        during = _log_lines(caplog)
        assert not [r for r in during if "dropped 0 " in r.getMessage()]
        loud = [r for r in during if r.levelno >= logging.WARNING]
        assert len(loud) == 1, [r.getMessage() for r in loud]
        assert loud[0].getMessage().startswith("prediction log cannot write to Redis")
        caplog.clear()
        server.start()  # the same port: the log's connection comes back by itself
        log.record(_entry("after", "eta", 400))
        async with asyncio.timeout(20.0):
            while log.written < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    finally:
        await log.stop()
        await client.close()
        server.close()
    back = [r.getMessage() for r in _log_lines(caplog) if r.levelno >= logging.INFO]
    assert len(back) == 1 and back[0].startswith("prediction log writes to Redis again"), back
    assert "3 entries dropped" in back[0], back[0]


async def test_a_long_outage_is_reminded_of_with_its_running_count(caplog: pytest.LogCaptureFixture) -> None:
    # remind_every_s=0: every failed write after the first is a reminder (the default is once a minute).
    client = RedisClient(f"redis://{refused_address()}/0", pool_size=1)
    log = PredictionLog(client, "preds", sample_rate=0.0, maxlen=10, linger_s=0.0, outage_remind_s=0.0)
    caplog.set_level(logging.WARNING, logger="aether.data_plane.prediction_log")
    log.start()
    try:
        for i in range(2):
            log.record(_entry(f"lost{i}", "eta", 200 + i))
            async with asyncio.timeout(10.0):
                while log.dropped < i + 1:  # noqa: ASYNC110
                    await asyncio.sleep(0.001)
    finally:
        await log.stop(flush_timeout_s=0.2)
        await client.close()
    lines = [r.getMessage() for r in _log_lines(caplog)]
    assert lines[0].startswith("prediction log cannot write to Redis"), lines
    assert lines[1].startswith("prediction log still cannot write to Redis"), lines
    assert "2 entries dropped" in lines[1] and "2 failed writes" in lines[1], lines[1]
