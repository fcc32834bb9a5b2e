"""Online feature reads: latency of the in-process read path, of GetOnlineFeatures over gRPC, and of the
floors under them, measured in one run.

    .venv/bin/python benchmarks/online_features.py [--quick]

Starts its own redis-server (persistence off) and writes 10,000 entities for one view with N in
{10, 100, 500, 1000} float32 features and for 10 views x 100 features. The data plane runs as its own
process (``python -m data_plane``), started from a registry snapshot file this benchmark writes, so no
control plane is needed. For 1-entity and 50-entity fetches (random entities each call) it measures:

(a) in-process: ``OnlineReader.read`` + response encoding: plan (cached) + one MGET + decode, on uvloop,
    with the same Redis client the server uses;
(b) gRPC: ``GetOnlineFeatures`` from a Python grpc.aio client (uvloop) at concurrency 1, the data plane's
    near cache off (``--near-cache-mb 0``): every read goes to Redis, as in (a). Issue 2's targets are
    judged on these rows;
(b') the same calls to a second data plane in its default configuration, near cache on (64 MiB), which
    first reads every entity of the case once (the steady state of a working set that fits the cache;
    the hits and misses of the timed calls are recorded). Not judged: a repeated read makes no Redis round
    trip, so this row shows what the cache saves, not the read path;
(c) floors: the same keys fetched raw (GET for one key, MGET for several) with redis-py sync + hiredis and
    with the data plane's async client; and a bare grpc.aio server (its own process, uvloop) that answers
    the same request with a fixed, pre-serialized response of the same bytes, called by the same client.
    gRPC runs of the data planes and of the bare server alternate in chunks, so machine noise hits all.

Prints a table and the targets of issue 2, and writes ``benchmarks/results/online_features.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
import grpc.aio
import numpy as np
import redis
import uvloop

from benchmarks._common import (
    environment,
    near_cache_counts,
    percentiles_ms,
    tokenless_environ,
    write_results,
)
from benchmarks._processes import stop as stop_process
from benchmarks.targets import online_features_targets
from clients.aether.v1 import feature_registry_pb2 as fr
from clients.aether.v1 import online_features_pb2 as pb
from clients.aether.v1 import online_features_pb2_grpc as pb_grpc
from clients.aether.v1 import types_pb2
from control_plane.features.online_writer import OnlineViewVersion, OnlineWriter
from data_plane import wire
from data_plane.catalog import Catalog, RegistryState
from data_plane.reader import OnlineReader, ReadLimits
from data_plane.redis_client import RedisClient
from data_plane.registry_watch import save_snapshot
from kernels.fingerprint import schema_fingerprint
from tests.support.redis_server import RedisServer, free_port

ENTITIES = 10_000
SINGLE_VIEW_SIZES = (10, 100, 500, 1000)
MULTI_VIEWS, MULTI_FEATURES = 10, 100
ROW_COUNTS = (1, 50)
GRPC_CHUNK = 250  # calls per alternation between the data plane and the bare server
MAX_MESSAGE = 128 * 1024 * 1024


@dataclass(frozen=True)
class Case:
    label: str
    refs: tuple[str, ...]
    rows: int
    features: int


def _views() -> list[fr.FeatureView]:
    names = [(f"single_{n}", n) for n in SINGLE_VIEW_SIZES] + [
        (f"multi_{i}", MULTI_FEATURES) for i in range(MULTI_VIEWS)
    ]
    views = []
    for name, n in names:
        columns = [(f"f{i}", "float32") for i in range(n)]
        views.append(
            fr.FeatureView(
                spec=fr.FeatureViewSpec(
                    name=name,
                    entity="driver",
                    features=[fr.Feature(name=c, value_type=types_pb2.FLOAT32) for c, _ in columns],
                    ttl_seconds=86_400,
                ),
                version=1,
                status=types_pb2.ACTIVE,
                schema_fingerprint=schema_fingerprint(name, 1, columns),
                latest_version=1,
            )
        )
    return views


def _cases() -> list[Case]:
    cases = []
    for rows in ROW_COUNTS:
        for n in SINGLE_VIEW_SIZES:
            cases.append(Case(f"{rows}x{n}", (f"single_{n}",), rows, n))
        multi = tuple(f"multi_{i}" for i in range(MULTI_VIEWS))
        cases.append(Case(f"{rows}x(10x100)", multi, rows, MULTI_VIEWS * MULTI_FEATURES))
    return cases


def _snapshot() -> fr.RegistrySnapshot:
    driver = fr.Entity(name="driver", join_keys=[fr.JoinKey(name="driver_id", value_type=types_pb2.INT64)])
    return fr.RegistrySnapshot(revision=1, entities=[driver], views=_views())


def _populate(redis_url: str, snapshot: fr.RegistrySnapshot) -> None:
    writer = OnlineWriter(redis.Redis.from_url(redis_url))
    rng = np.random.default_rng(0)
    now_us = time.time_ns() // 1000
    ids = [[str(i)] for i in range(ENTITIES)]
    for view in snapshot.views:
        spec = view.spec
        target = OnlineViewVersion(
            name=spec.name,
            version=view.version,
            entity=spec.entity,
            columns=tuple((f.name, "float32") for f in spec.features),
            fingerprint=view.schema_fingerprint,
            ttl_seconds=spec.ttl_seconds,
        )
        for start in range(0, ENTITIES, 1000):
            values = rng.random((min(1000, ENTITIES - start), len(spec.features)), dtype=np.float32)
            writer.write(target, ids[start : start + 1000], values, now_us)


def _rows(rng: random.Random, count: int) -> list[dict[str, str]]:
    return [{"driver_id": str(rng.randrange(ENTITIES))} for _ in range(count)]


async def _time_calls(call: Callable[[int], Awaitable[Any]], iterations: int, warmup: int) -> list[float]:
    """``call(0 .. iterations-1)`` timed, after ``call(iterations .. iterations+warmup-1)`` untimed: the
    warm-up requests are ones the timed set never repeats (a repeat would find its blobs, keys and
    answers already in the CPU's caches, and flatter the timed figures)."""
    for i in range(warmup):
        await call(iterations + i)
    samples = []
    clock = time.perf_counter
    for i in range(iterations):
        started = clock()
        await call(i)
        samples.append(clock() - started)
    return samples


def _time_sync(call: Callable[[int], Any], iterations: int, warmup: int) -> list[float]:
    """:func:`_time_calls` for a synchronous call."""
    for i in range(warmup):
        call(iterations + i)
    samples = []
    clock = time.perf_counter
    for i in range(iterations):
        started = clock()
        call(i)
        samples.append(clock() - started)
    return samples


def _start_process(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line:
        process.kill()
        raise RuntimeError(f"{args} exited before announcing its address")
    return process, line.rsplit(" ", 1)[-1]


# --- the bare server ---------------------------------------------------------------------------------


AnswerKey = tuple[int, str, int]  # (reference count, first reference, rows): distinct for every case


def _answer_key(refs: Sequence[str], rows: int) -> AnswerKey:
    return len(refs), refs[0], rows


async def _serve_fixed(answers: dict[AnswerKey, bytes]) -> None:
    """A bare grpc.aio OnlineFeatures server: parses the request, answers fixed pre-serialized bytes.
    It picks the answer without building every reference string (len and one item of the parsed
    message), so that the floor pays only for parsing, as any server must."""

    async def get_online_features(request: pb.GetOnlineFeaturesRequest, context: Any) -> bytes:
        return answers[_answer_key(request.features, len(request.rows))]

    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
        ]
    )
    handler = grpc.method_handlers_generic_handler(
        "aether.v1.OnlineFeatures",
        {
            "GetOnlineFeatures": grpc.unary_unary_rpc_method_handler(
                get_online_features, request_deserializer=pb.GetOnlineFeaturesRequest.FromString
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(f"bare server listening on 127.0.0.1:{port}", flush=True)
    await stop.wait()
    await server.stop(None)


# --- the measurements --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataPlanes:
    uncached: str  # address of the data plane with its near cache off (judged)
    cached: str  # address of the one in its default configuration (near cache on)
    cached_metrics_port: int


async def _measure(
    redis_url: str, planes: DataPlanes, bare_exe: list[str], env: dict[str, str], quick: bool
) -> dict[str, Any]:
    iterations = 300 if quick else 4000
    warmup = 50 if quick else 300
    cases = _cases()
    rng = random.Random(1)
    requests = {c.label: [_rows(rng, c.rows) for _ in range(iterations + warmup)] for c in cases}

    state = RegistryState()
    state.catalog = Catalog(_snapshot())
    client = RedisClient(redis_url)
    reader = OnlineReader(state, client, ReadLimits())
    sync_redis = redis.Redis.from_url(redis_url)
    results: dict[str, dict[str, Any]] = {c.label: {"rows": c.rows, "features": c.features} for c in cases}

    gc.collect()
    gc.freeze()
    for case in cases:
        rows = requests[case.label]
        plan = state.catalog.plan(case.refs)
        keys = [plan.keys(r) for r in rows]

        async def in_process(i: int, case: Case = case, rows: list[list[dict[str, str]]] = rows) -> bytes:
            result = await reader.read(case.refs, rows[i])
            return wire.encode_response(
                result.row_count,
                [(b.plan.wire_prefix, b.values, b.statuses, b.event_timestamps_us) for b in result.blocks],
            )

        async def raw_async(i: int, keys: list[list[bytes]] = keys) -> object:
            return await client.mget(keys[i], 1.0)

        def raw_sync(i: int, keys: list[list[bytes]] = keys) -> object:
            return sync_redis.get(keys[i][0]) if len(keys[i]) == 1 else sync_redis.mget(keys[i])

        entry = results[case.label]
        entry["in_process"] = percentiles_ms(await _time_calls(in_process, iterations, warmup))
        entry["raw_get_redis_py_sync"] = percentiles_ms(_time_sync(raw_sync, iterations, warmup))
        entry["raw_get_async_client"] = percentiles_ms(await _time_calls(raw_async, iterations, warmup))
        entry["redis_keys"] = len(keys[0])
        entry["response_bytes"] = len(await in_process(0))
        print(f"  measured in-process {case.label}", file=sys.stderr, flush=True)

    # Fixed answers for the bare server: the data plane's real answer for each case, same bytes.
    answers_path = Path(env["AETHER_HOME"]) / "answers.json"
    answers = []
    for case in cases:
        blob = await in_process_bytes(reader, case, requests[case.label][0])
        answers.append(
            {"refs": list(case.refs), "rows": case.rows, "response": base64.b64encode(blob).decode()}
        )
    answers_path.write_text(json.dumps(answers))
    bare, bare_addr = _start_process([*bare_exe, "--serve-fixed", str(answers_path)], env)
    try:
        await _measure_grpc(cases, requests, planes, bare_addr, results, iterations, warmup)
    finally:
        stop_process(bare)
    await client.close()
    return results


async def in_process_bytes(reader: OnlineReader, case: Case, rows: list[dict[str, str]]) -> bytes:
    result = await reader.read(case.refs, rows)
    return wire.encode_response(
        result.row_count,
        [(b.plan.wire_prefix, b.values, b.statuses, b.event_timestamps_us) for b in result.blocks],
    )


async def _read_every_entity(stub: Any, case: Case) -> None:
    """Reads each of the 10,000 entities once through ``stub`` (16 calls at a time), so that the near
    cache holds the case's working set before it is timed."""
    ids = [str(i) for i in range(ENTITIES)]
    chunks = [ids[i : i + case.rows] for i in range(0, ENTITIES, case.rows)]

    async def worker() -> None:
        while chunks:
            chunk = chunks.pop()
            request = pb.GetOnlineFeaturesRequest(
                features=case.refs, rows=[pb.EntityRow(keys={"driver_id": e}) for e in chunk]
            )
            await stub.GetOnlineFeatures(request, timeout=30)

    await asyncio.gather(*(worker() for _ in range(16)))


async def _measure_grpc(
    cases: list[Case],
    requests: dict[str, list[list[dict[str, str]]]],
    planes: DataPlanes,
    bare_addr: str,
    results: dict[str, dict[str, Any]],
    iterations: int,
    warmup: int,
) -> None:
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
    ]
    async with (
        grpc.aio.insecure_channel(planes.uncached, options=options) as dp_channel,
        grpc.aio.insecure_channel(planes.cached, options=options) as cached_channel,
        grpc.aio.insecure_channel(bare_addr, options=options) as bare_channel,
    ):
        stubs = {
            "grpc": pb_grpc.OnlineFeaturesStub(dp_channel),  # type: ignore[no-untyped-call]
            "grpc_near_cache": pb_grpc.OnlineFeaturesStub(cached_channel),  # type: ignore[no-untyped-call]
            "bare_grpc_server": pb_grpc.OnlineFeaturesStub(bare_channel),  # type: ignore[no-untyped-call]
        }
        for case in cases:
            messages = [
                pb.GetOnlineFeaturesRequest(features=case.refs, rows=[pb.EntityRow(keys=r) for r in rows])
                for rows in requests[case.label]
            ]
            samples: dict[str, list[float]] = {name: [] for name in stubs}
            await _read_every_entity(stubs["grpc_near_cache"], case)
            for stub in stubs.values():
                for message in messages[:warmup]:
                    await stub.GetOnlineFeatures(message, timeout=10)
            cache_before = near_cache_counts(planes.cached_metrics_port)
            timed = messages[warmup:]
            clock = time.perf_counter
            for start in range(0, len(timed), GRPC_CHUNK):
                for name, stub in stubs.items():
                    call = stub.GetOnlineFeatures
                    out = samples[name]
                    for message in timed[start : start + GRPC_CHUNK]:
                        started = clock()
                        response = await call(message, timeout=10)
                        out.append(clock() - started)
                    assert response.row_count == case.rows
            for name, values in samples.items():
                results[case.label][name] = percentiles_ms(values)
            cache_after = near_cache_counts(planes.cached_metrics_port)
            hits = cache_after.get("hits", 0.0) - cache_before.get("hits", 0.0)
            misses = cache_after.get("misses", 0.0) - cache_before.get("misses", 0.0)
            ratio = hits / (hits + misses) if hits + misses else None
            results[case.label]["grpc_near_cache"]["hit_ratio"] = ratio
            print(f"  measured gRPC {case.label}", file=sys.stderr, flush=True)


def _cached(entry: dict[str, Any]) -> str:
    hit_ratio = entry.get("hit_ratio")
    hits = "-" if hit_ratio is None else f"{100 * hit_ratio:.1f}%"
    return f"{entry['p50_ms']:6.3f} {entry['p99_ms']:6.3f} ({hits})"


def _print_table(results: dict[str, dict[str, Any]], targets: list[dict[str, Any]]) -> None:
    def trio(entry: dict[str, float]) -> str:
        return f"{entry['p50_ms']:6.3f} {entry['p99_ms']:6.3f} {entry['p99_9_ms']:6.3f}"

    header = (
        f"{'case':<13}{'bytes':>9}  {'in-process p50/p99/p99.9':<22}  {'gRPC p50/p99/p99.9':<22}  "
        f"{'bare gRPC p50/p99/p99.9':<22}  {'GET sync p99':>12}  {'GET async p99':>13}  "
        f"{'near cache p50/p99 (hits)':<26}"
    )
    print(header)
    print("-" * len(header))
    for label, entry in results.items():
        print(
            f"{label:<13}{entry['response_bytes']:>9}  {trio(entry['in_process']):<22}  "
            f"{trio(entry['grpc']):<22}  {trio(entry['bare_grpc_server']):<22}  "
            f"{entry['raw_get_redis_py_sync']['p99_ms']:>12.3f}  "
            f"{entry['raw_get_async_client']['p99_ms']:>13.3f}  {_cached(entry['grpc_near_cache']):<26}"
        )
    print(
        "(milliseconds; rows x features; 10x100 = ten views of 100 features; 'near cache': gRPC to a data"
        " plane in its default configuration, every entity read once first; not judged)\n"
    )
    for t in targets:
        shown = "not judged" if t["met"] is None else ("met" if t["met"] else "MISSED")
        reason = f" ({t['reason']})" if t.get("reason") else ""
        print(f"[{shown}] {t['target']}: {t['value']} (bound {t['bound']}){reason}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a smoke test: few iterations")
    parser.add_argument("--serve-fixed", type=Path, help=argparse.SUPPRESS)  # internal: the bare server
    args = parser.parse_args()
    if args.serve_fixed:
        answers = {
            _answer_key(item["refs"], item["rows"]): base64.b64decode(item["response"])
            for item in json.loads(args.serve_fixed.read_text())
        }
        assert len(answers) == len(json.loads(args.serve_fixed.read_text())), "answer keys must be distinct"
        uvloop.run(_serve_fixed(answers))
        return 0

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="aether-bench-"))
    env = {
        **tokenless_environ(),
        "AETHER_HOME": str(work),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    server = RedisServer()
    server.start()
    data_planes: list[subprocess.Popen[str]] = []
    try:
        snapshot = _snapshot()
        snapshot_path = work / "registry_snapshot.pb"
        save_snapshot(snapshot_path, snapshot.SerializeToString())
        print(f"writing {ENTITIES} entities x {len(snapshot.views)} views ...", file=sys.stderr, flush=True)
        _populate(server.url, snapshot)
        command = [
            sys.executable, "-m", "data_plane",
            "--listen", "127.0.0.1:0",
            "--redis-url", server.url,
            "--control-plane", f"127.0.0.1:{free_port()}",  # none: the data plane serves its snapshot
            "--snapshot-path", str(snapshot_path),
        ]  # fmt: skip
        # The judged rows measure the read through Redis (issue 2's floors are Redis and gRPC round trips),
        # so that data plane has its near cache off; the other one is the default configuration.
        uncached, uncached_addr = _start_process([*command, "--near-cache-mb", "0"], env)
        data_planes.append(uncached)
        metrics_port = free_port()
        cached, cached_addr = _start_process([*command, "--metrics-listen", f"127.0.0.1:{metrics_port}"], env)
        data_planes.append(cached)
        planes = DataPlanes(uncached_addr, cached_addr, metrics_port)
        bare_exe = [sys.executable, str(Path(__file__).resolve())]
        results = uvloop.run(_measure(server.url, planes, bare_exe, env, args.quick))
    finally:
        for data_plane in data_planes:
            stop_process(data_plane)
        server.close()
        shutil.rmtree(work, ignore_errors=True)

    document: dict[str, Any] = {
        "command": "python benchmarks/online_features.py" + (" --quick" if args.quick else ""),
        "quick": args.quick,
        "entities": ENTITIES,
        **environment(["grpcio", "redis", "hiredis", "numpy", "protobuf", "uvloop"]),
        "cases": results,
    }
    document["targets"] = online_features_targets(document)
    _print_table(results, document["targets"])
    document["wall_s"] = round(time.monotonic() - started, 1)
    path = write_results("online_features", document)
    print(f"\nwrote {path} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
