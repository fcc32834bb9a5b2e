"""``python -m data_plane``: runs the data plane on uvloop until SIGTERM or SIGINT, then drains."""

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

DRAIN_GRACE_S = 5.0


def parse_args(argv: Sequence[str] | None) -> DataPlaneSettings:
    settings = DataPlaneSettings.from_env()
    parser = argparse.ArgumentParser(prog="python -m data_plane", description=__doc__)
    parser.add_argument("--listen", default=settings.listen, help="HOST:PORT (port 0 picks a free one)")
    parser.add_argument("--redis-url", default=settings.redis_url)
    parser.add_argument("--control-plane", default=settings.control_plane_addr, help="HOST:PORT")
    parser.add_argument("--snapshot-path", type=Path, default=settings.snapshot_path)
    args = parser.parse_args(argv)
    return dataclasses.replace(
        settings,
        listen=args.listen,
        redis_url=args.redis_url,
        control_plane_addr=args.control_plane,
        snapshot_path=args.snapshot_path,
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
    await stop.wait()
    await handle.stop(DRAIN_GRACE_S)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = parse_args(argv)
    uvloop.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
