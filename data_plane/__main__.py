"""``python -m data_plane``: runs the data plane on uvloop until SIGTERM or SIGINT, then drains: health
turns NOT_SERVING at once, requests are still served for ``--drain-delay-s`` (``AETHER_DRAIN_DELAY_S``;
while load balancers catch up), then new Predict and ModelInfer requests are refused with UNAVAILABLE and
admitted ones finish within ``--drain-grace-s`` (``AETHER_DRAIN_GRACE_S``) before the process exits
(:meth:`data_plane.server.DataPlaneHandle.drain`).

TLS and auth come from the environment (:class:`data_plane.settings.DataPlaneSettings`): with
``AETHER_TLS_CERT`` / ``AETHER_TLS_KEY`` it listens with TLS only; it reaches the control plane with
``AETHER_TOKEN`` (or ``AETHER_TOKEN_FILE``) and ``AETHER_TLS_CA``.

Once ready it prints ``aether data plane listening on HOST:PORT`` and, with a metrics endpoint, a second
line ``aether data plane metrics on HOST:PORT`` (the replica manager scrapes it for the autoscaler).

``--workers N`` (N > 1) runs N worker processes sharing one port (SO_REUSEPORT; the kernel spreads
connections across them), so that one data plane uses the cores of a bigger machine: this process picks
the port, starts the workers, prints the listening line once every worker is ready, and forwards
SIGTERM / SIGINT to them."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import uvloop

from data_plane.server import listen_address, start_server
from data_plane.settings import DataPlaneSettings
from data_plane.workers import run_workers


def parse_args(argv: Sequence[str] | None) -> tuple[DataPlaneSettings, int]:
    settings = DataPlaneSettings.from_env()
    parser = argparse.ArgumentParser(prog="python -m data_plane", description=__doc__)
    parser.add_argument("--listen", default=settings.listen, help="HOST:PORT (port 0 picks a free one)")
    parser.add_argument("--redis-url", default=settings.redis_url)
    parser.add_argument("--control-plane", default=settings.control_plane_addr, help="HOST:PORT")
    parser.add_argument("--snapshot-path", type=Path, default=settings.snapshot_path)
    parser.add_argument(
        "--model-config",
        type=Path,
        default=settings.model_config,
        help="JSON file of ModelSpecs to serve besides the deployment plans",
    )
    parser.add_argument(
        "--metrics-listen",
        default=settings.metrics_listen,
        help="HOST:PORT of the Prometheus /metrics endpoint (empty: none)",
    )
    parser.add_argument("--intra-op-threads", type=int, default=settings.intra_op_threads)
    parser.add_argument("--max-queue-size", type=int, default=settings.max_queue_size)
    parser.add_argument(
        "--inline-batch-below-us",
        type=float,
        default=settings.inline_batch_below_us,
        help="batches measured shorter than this run on the event loop, not a worker thread (0: never)",
    )
    parser.add_argument(
        "--prediction-log-sample-rate", type=float, default=settings.prediction_log_sample_rate
    )
    parser.add_argument(
        "--drain-delay-s",
        type=float,
        default=settings.drain_delay_s,
        help="on SIGTERM, seconds of serving while NOT_SERVING before new requests are refused",
    )
    parser.add_argument(
        "--drain-grace-s",
        type=float,
        default=settings.drain_grace_s,
        help="on SIGTERM, seconds admitted requests get to finish",
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes sharing the port")
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # set for workers
    args = parser.parse_args(argv)
    return (
        dataclasses.replace(
            settings,
            listen=args.listen,
            redis_url=args.redis_url,
            control_plane_addr=args.control_plane,
            snapshot_path=args.snapshot_path,
            model_config=args.model_config,
            metrics_listen=args.metrics_listen,
            intra_op_threads=args.intra_op_threads,
            max_queue_size=args.max_queue_size,
            inline_batch_below_us=args.inline_batch_below_us,
            prediction_log_sample_rate=args.prediction_log_sample_rate,
            reuse_port=args.reuse_port,
            drain_delay_s=args.drain_delay_s,
            drain_grace_s=args.drain_grace_s,
        ),
        args.workers,
    )


async def serve(settings: DataPlaneSettings) -> None:
    handle = await start_server(settings)
    # Everything allocated so far lives as long as the process: keep it out of the collector's full
    # passes, which would otherwise walk it on the latency path (a p99.9 matter).
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"aether data plane listening on {listen_address(settings, handle.port)}", flush=True)
    if handle.metrics_port is not None:
        metrics_host = settings.metrics_listen.rsplit(":", 1)[0]
        print(f"aether data plane metrics on {metrics_host}:{handle.metrics_port}", flush=True)
    await stop.wait()
    await handle.drain(settings.drain_delay_s, settings.drain_grace_s)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings, workers = parse_args(argv)
    if workers > 1:
        return run_workers(settings, workers, list(sys.argv[1:] if argv is None else argv))
    uvloop.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
