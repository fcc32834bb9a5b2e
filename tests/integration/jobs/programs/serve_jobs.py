"""A control-plane process serving only ``aether.v1.Jobs``, for the restart tests (the real
``python -m control_plane`` serves whatever ``DEFAULT_SERVICES`` lists):
``python -m tests.integration.jobs.programs.serve_jobs --db-url URL --home DIR --gpus N [--listen
HOST:PORT]``. Prints
``aether control plane listening on HOST:PORT`` once ready and runs until killed."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from control_plane.api import jobs as jobs_api
from control_plane.jobs.pool import DevicePool
from control_plane.jobs.settings import JobsSettings
from control_plane.server import start_server
from control_plane.settings import ControlPlaneSettings
from tests.integration.jobs.conftest import TEST_LEASE_S


async def serve(args: argparse.Namespace) -> None:
    home = Path(args.home)
    settings = ControlPlaneSettings(
        home=home, db_url=args.db_url, listen_addr=args.listen, shutdown_grace_s=0.5
    )
    jobs = JobsSettings(
        folder=home / "jobs", pool=DevicePool.from_config(args.gpus), tick_s=0.1, kill_grace_s=1.0,
        job_cwd=Path(args.job_cwd), lease_s=TEST_LEASE_S, lease_renew_s=TEST_LEASE_S / 4,
    )  # fmt: skip
    server = await start_server(settings, services=[jobs_api.service_module(jobs)])
    print(f"aether control plane listening on {server.address}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--home", required=True)
    parser.add_argument("--gpus", default="2")
    parser.add_argument("--job-cwd", required=True)
    parser.add_argument("--listen", default="127.0.0.1:0", help="address to listen on (default: a free port)")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
