"""Streaming materialization throughput: events/s through validation, window aggregation and both stores.

    python benchmarks/streaming.py [--quick] [--events N] [--entities E] [--output PATH] [--profile PATH]

Starts its own redis-server, publishes N events (string fields, as producers send them) to a Redis
stream, then times one in-process materializer pinned to one CPU core draining the stream: XREADGROUP,
validation (on), aggregation (count/sum/mean/max/last over 10 min / 1 h / 24 h windows, 144 buckets),
the atomic Redis commit (idempotency set, online blobs, receipt, XACK), the offline Parquet history and
the SQL counters. Also times validation alone on the same events. Prints a table; JSON lands in
``benchmarks/results/streaming.json`` (or ``--output``) with the machine and versions. Target: >= 50k
events/s. ``--profile PATH`` runs the timed loop under cProfile, dumps the stats to PATH and prints the
top functions; a profiled run is slower, so it is marked as such and writes no results file unless
``--output`` names one.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pstats
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pyarrow as pa
import redis

from benchmarks._common import environment, write_results
from benchmarks.targets import STREAMING_EVENTS, STREAMING_EVENTS_PER_S, streaming_targets
from control_plane.ingestion.streaming.materializer import StreamMaterializer
from control_plane.ingestion.streaming.options import MaterializerOptions
from control_plane.ingestion.streaming.redis_source import RedisStreamSource
from control_plane.ingestion.validation import validate
from control_plane.offline.store import OfflineStore
from tests.integration.ingestion.streaming_support import STREAM, registry_db
from tests.support.redis_server import RedisServer

TARGET_EVENTS_PER_S = STREAMING_EVENTS_PER_S


def make_events(n: int, entities: int) -> list[dict[str, str]]:
    rng = np.random.default_rng(0)
    base = datetime.now(UTC) - timedelta(hours=2)
    offsets = np.sort(rng.integers(0, 2 * 3600 * 10**6, n))
    stamps = [(base + timedelta(microseconds=int(o))).isoformat() for o in offsets]
    sensors = rng.integers(0, entities, n).astype(str)
    amounts = np.round(rng.normal(10, 5, n), 3).astype(str)
    return [
        {"sensor_id": s, "event_ts": t, "amount": a} for s, t, a in zip(sensors, stamps, amounts, strict=True)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run (20k events)")
    parser.add_argument("--events", type=int, default=0)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--count", type=int, default=5000, help="messages per XREADGROUP")
    parser.add_argument("--output", type=Path, default=None, help="results JSON path (default: results/)")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the timed loop into this file")
    args = parser.parse_args()
    n = args.events or (20_000 if args.quick else STREAMING_EVENTS)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    server = RedisServer()
    server.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            command = " ".join(["python", "benchmarks/streaming.py", *sys.argv[1:]])
            return run(
                server.url, Path(tmp), n, args.entities, args.count, args.output, args.profile,
                command=command, quick=args.quick,
            )  # fmt: skip
    finally:
        server.close()


def run(
    redis_url: str,
    tmp: Path,
    n: int,
    entities: int,
    count: int,
    output: Path | None,
    profile: Path | None,
    *,
    command: str,
    quick: bool,
) -> int:
    _url, sessions, view, entity = registry_db(tmp)
    client = redis.Redis.from_url(redis_url)
    events = make_events(n, entities)

    table = pa.table({name: pa.array([e[name] for e in events], pa.string()) for name in events[0]})
    now = datetime.now(UTC)
    validate(view, entity, table.slice(0, 1000), now=now)  # warm up
    started = time.perf_counter()
    for offset in range(0, n, count):
        validate(view, entity, table.slice(offset, count), now=now)
    validation_s = time.perf_counter() - started

    pipeline = client.pipeline(transaction=False)
    for i, event in enumerate(events):
        pipeline.xadd(STREAM, event)  # type: ignore[arg-type]
        if i % 10_000 == 9_999:
            pipeline.execute()
    pipeline.execute()
    # The events span the last two hours and are all published now: a lateness under that would
    # quarantine the older ones (events that reach the stream later than the lateness are not applied).
    options = MaterializerOptions(count=count, block_ms=10, lag_every_s=3600, lateness_s=3 * 3600)
    source = RedisStreamSource(client, STREAM, options.group, "bench")
    materializer = StreamMaterializer(
        view, entity, source, client, sessions, OfflineStore(str(tmp / "off")), options
    )
    materializer.start()
    del events, table
    # The harness's own objects (the published events) are not the materializer's: keep the garbage
    # collector from re-scanning them on every collection inside the timed loop.
    gc.collect()
    gc.freeze()
    profiler = cProfile.Profile() if profile is not None else None
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    while materializer.totals.accepted + materializer.totals.quarantined < n:
        materializer.step()
    materializer.flush()  # batches still in the outbox go to Parquet and SQL inside the timed span
    if profiler is not None:
        profiler.disable()
    pipeline_s = time.perf_counter() - started

    results: dict[str, Any] = {
        "command": command,
        "quick": quick,
        "events": n,
        "entities": entities,
        "read_count": count,
        "validation_only_events_per_s": n / validation_s,
        "end_to_end_events_per_s": n / pipeline_s,
        "end_to_end_seconds": pipeline_s,
        "accepted": materializer.totals.accepted,
        "quarantined": materializer.totals.quarantined,
        "target_events_per_s": TARGET_EVENTS_PER_S,
        "one_core": True,
        "profiled": profile is not None,
        # This machine is shared: a load average above its core count means the figures are pessimistic.
        "load_average_1m_at_end": os.getloadavg()[0],
        "environment": environment(["numpy", "numba", "pyarrow", "redis", "hiredis", "sqlalchemy"]),
    }
    print(f"{'stage':<52}{'events/s':>14}")
    print(f"{'validation only':<52}{results['validation_only_events_per_s']:>14,.0f}")
    label = "read + validate + aggregate + online + offline + SQL"
    print(f"{label:<52}{results['end_to_end_events_per_s']:>14,.0f}")
    results["targets"] = streaming_targets(results)
    for target in results["targets"]:
        shown = "met" if target["met"] else ("not judged" if target["met"] is None else "MISSED")
        print(f"{target['target']}: {shown}" + (f" ({target['reason']})" if target.get("reason") else ""))
    if profiler is not None and profile is not None:
        print("(profiled run: the end-to-end figure is slowed by cProfile)")
        profiler.dump_stats(profile)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
        print(f"profile in {profile}")
    if output is not None:
        document = {"benchmark": "streaming", "run_at": datetime.now(UTC).isoformat(), **results}
        output.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {output}")
    elif profiler is None:
        print(f"wrote {write_results('streaming', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
