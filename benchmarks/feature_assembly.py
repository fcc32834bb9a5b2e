"""Predict's feature assembly: the model input of one entity with 500 float32 features, in process.

    .venv/bin/python benchmarks/feature_assembly.py [--quick]

Starts its own redis-server and writes 10,000 entities of a 500-feature view (the online_features
benchmark's data). Measures ``FeatureAssembler.assemble`` (one MGET, decode, column layout, request-time
merge) for the same model input referenced three ways: one whole-view reference, 500 references listed
one by one, and those 500 plus two ``request:`` features with one same-name override. Baseline in the
same run: the merge step done the way Aether did it before ``data_plane/feature_columns.py`` (a loop over
the references that slices and concatenates each one's columns; the unit test's reference), against the
layout's merge on the same stored matrix. Prints a table; writes ``benchmarks/results/feature_assembly.json``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import uvloop

from benchmarks._common import environment, percentiles_ms, write_results
from benchmarks.online_features import _populate, _snapshot, _time_calls, _time_sync
from data_plane.catalog import Catalog, RegistryState
from data_plane.feature_columns import column_layout, merge_request_features
from data_plane.feature_vector import FeatureAssembler
from data_plane.models.spec import ModelSpec, TensorSpec
from data_plane.reader import OnlineReader, ReadLimits
from data_plane.redis_client import RedisClient
from tests.support.redis_server import RedisServer
from tests.unit.data_plane.test_feature_columns import reference

FEATURES = 500
VIEW = f"single_{FEATURES}"
ENTITIES = 10_000


def _model(refs: tuple[str, ...]) -> ModelSpec:
    return ModelSpec(
        name="ranker",
        version=1,
        artifact_sha256="",
        artifact_uri="",
        inputs=(
            TensorSpec("input", "float32", (-1, FEATURES + sum(r.startswith("request:") for r in refs))),
        ),
        outputs=(TensorSpec("output", "float32", (-1, 1)),),
        feature_refs=refs,
    )


def entity_rows(iterations: int, warmup: int, seed: int = 0) -> tuple[list[list[dict[str, str]]], ...]:
    """(timed rows, warm-up rows), each one entity, drawn from disjoint sets of entities: a warm-up on
    the timed set's first entities would leave their keys and decoded rows hot for the first timed calls."""
    rng = random.Random(seed)
    ids = list(range(ENTITIES))
    rng.shuffle(ids)
    pool = max(1, min(warmup, ENTITIES // 10))
    warm_ids, timed_ids = ids[:pool], ids[pool:]
    timed = [[{"driver_id": str(rng.choice(timed_ids))}] for _ in range(iterations)]
    warm = [[{"driver_id": str(warm_ids[i % pool])}] for i in range(warmup)]
    return timed, warm


async def _measure(redis_url: str, iterations: int) -> dict[str, dict[str, float]]:
    warmup = iterations // 10
    state = RegistryState()
    state.catalog = Catalog(_snapshot())
    client = RedisClient(redis_url)
    assembler = FeatureAssembler(OnlineReader(state, client, ReadLimits()))
    each = tuple(f"{VIEW}:f{i}" for i in range(FEATURES))
    models = {
        "one whole-view reference": (_model((VIEW,)), False),
        "500 references one by one": (_model(each), False),
        "500 references + 2 request-time + 1 override": (
            _model((*each, "request:hour", "request:day")),
            True,
        ),
    }
    timed, warm = entity_rows(iterations, warmup)
    rows = timed + warm  # call i < iterations is timed; the warm-up calls iterations + i
    request = [{"hour": 13.0, "day": 4.0, f"{VIEW}:f7": 0.5}]
    results: dict[str, dict[str, float]] = {}
    for label, (spec, with_request) in models.items():
        extra = request if with_request else []

        async def assemble(i: int, spec: ModelSpec = spec, extra: list[dict[str, float]] = extra) -> None:
            await assembler.assemble(spec, rows[i], extra, None)

        results[f"assemble: {label}"] = percentiles_ms(await _time_calls(assemble, iterations, warmup))
    await client.close()

    refs = (*each, "request:hour", "request:day")
    counts = [1] * FEATURES
    stored = np.random.default_rng(0).random((1, FEATURES), dtype=np.float32)
    status = np.zeros((1, FEATURES), np.uint8)
    layout = column_layout(refs, counts)
    results["merge only: per-reference loop (before)"] = percentiles_ms(
        _time_sync(lambda _: reference(refs, counts, stored, status, request), iterations, warmup)
    )
    results["merge only: column layout (now)"] = percentiles_ms(
        _time_sync(lambda _: merge_request_features(layout, stored, status, request), iterations, warmup)
    )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    args = parser.parse_args()
    iterations = 300 if args.quick else 5000
    server = RedisServer()
    server.start()
    try:
        started = time.perf_counter()
        _populate(server.url, _snapshot())
        results = uvloop.run(_measure(server.url, iterations))
    finally:
        server.close()
    print(f"{'case (1 entity, 500 float32 features)':58s} {'p50 ms':>8s} {'p99 ms':>8s}")
    for label, figures in results.items():
        print(f"{label:58s} {figures['p50_ms']:8.3f} {figures['p99_ms']:8.3f}")
    path = write_results(
        "feature_assembly",
        {
            "benchmark": "feature_assembly",
            "command": "python benchmarks/feature_assembly.py" + (" --quick" if args.quick else ""),
            "quick": args.quick,
            **environment(["numpy", "redis", "hiredis", "uvloop"]),
            "results": results,
            "wall_s": round(time.perf_counter() - started, 1),
        },
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
