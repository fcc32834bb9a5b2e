"""``python -m benchmarks.loadgen --target HOST:PORT --api modelinfer --model mlp --width 512 -c 1,8,32``

Prints one JSON line per concurrency level (throughput, percentiles, errors, latency histogram)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

import grpc.aio
import uvloop

from benchmarks._common import finite_or_none
from benchmarks.loadgen.core import MODEL_INFER, PREDICT, closed_loop, model_infer_requests, predict_requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen", description=__doc__)
    parser.add_argument("--target", required=True, help="HOST:PORT of the server under load")
    parser.add_argument("--api", choices=("modelinfer", "predict"), default="modelinfer")
    parser.add_argument("--model", default="mlp", help="model name (modelinfer) or deployment (predict)")
    parser.add_argument("--width", type=int, default=512, help="float32 features per row (modelinfer)")
    parser.add_argument("--entities", type=int, default=10_000, help="entity ids 0..N-1 (predict)")
    parser.add_argument("--entity-key", default="entity_id", help="join key name (predict)")
    parser.add_argument("-c", "--concurrency", default="1,8,32,64")
    parser.add_argument("-d", "--duration", type=float, default=5.0, help="seconds measured per level")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--histogram", action="store_true", help="include the latency histogram")
    parser.add_argument(
        "--token",
        default=os.environ.get("AETHER_TOKEN") or None,
        help="bearer token for a data plane with auth on (default: $AETHER_TOKEN; none when unset)",
    )
    args = parser.parse_args(argv)
    try:
        levels = [int(c) for c in args.concurrency.split(",")]
    except ValueError:
        parser.error(f"-c/--concurrency: {args.concurrency!r} is not a comma-separated list of whole numbers")
    if min(levels) < 1:
        parser.error(f"-c/--concurrency: every level must be at least 1, got {args.concurrency!r}")
    if args.duration <= 0 or args.warmup < 0:
        parser.error("-d/--duration must be above 0 and --warmup at least 0")
    if args.width < 1 or args.entities < 1:
        parser.error(f"--width and --entities must be at least 1, got {args.width} and {args.entities}")
    if args.api == "modelinfer":
        method, requests = MODEL_INFER, model_infer_requests(args.model, args.width)
    else:
        method = PREDICT
        requests = predict_requests(args.model, [str(i) for i in range(args.entities)], args.entity_key)
    for level in levels:
        try:
            result = uvloop.run(
                closed_loop(args.target, method, requests, level, args.duration, args.warmup, args.token)
            )
        except grpc.aio.AioRpcError as exc:  # the first (warm-up) call failed: nothing to measure
            print(f"error: {args.target}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 2
        # Strict JSON: a level whose every call failed has no percentiles (null, never a bare NaN).
        print(json.dumps(finite_or_none(asdict(result) if args.histogram else result.summary())), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
