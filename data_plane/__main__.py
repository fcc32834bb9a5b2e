"""``python -m data_plane``: runs the data plane on uvloop until SIGTERM or SIGINT, then drains: health
turns NOT_SERVING at once, requests are still served for ``--drain-delay-s`` (``AETHER_DRAIN_DELAY_S``;
while load balancers catch up), then new Predict and ModelInfer requests are refused with UNAVAILABLE and
admitted ones finish within ``--drain-grace-s`` (``AETHER_DRAIN_GRACE_S``) before the process exits
(:meth:`data_plane.server.DataPlaneHandle.drain`).

TLS and auth come from the environment (:class:`data_plane.settings.DataPlaneSettings`): with
``AETHER_TLS_CERT`` / ``AETHER_TLS_KEY`` it listens with TLS only; it reaches the control plane with
``AETHER_TOKEN`` (or ``AETHER_TOKEN_FILE``) and ``AETHER_TLS_CA``.

Once ready it prints ``aether data plane listening on HOST:PORT`` and, with a metrics endpoint, a second
line ``aether data plane metrics on HOST:PORT`` (the replica manager scrapes it for the autoscaler; with
``--workers N``, ``HOST:PORT,HOST:PORT,...``, one endpoint per worker process); then, once its overall
health first turns SERVING (the registry's catalog is in), ``aether data plane serving`` — with
``--workers N`` once every worker is, which a health probe through the shared port cannot tell (it reaches
one worker). With ``--workers N`` a line ``aether data plane workers on HOST:PORT,HOST:PORT,...`` comes
after the metrics line (before the serving one): each worker's own port, where its health alone answers
(the replica manager probes each, so a hung worker is found).

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
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import uvloop

from clients.env_values import ConfigurationError
from clients.errors import AetherError, FailedPrecondition
from clients.redis_address import RedisAddress
from data_plane.models.spec import load_model_config
from data_plane.ports import check_free
from data_plane.redis_client import RedisClient
from data_plane.redis_errors import RedisMisconfigured, RedisUnavailable
from data_plane.server import listen_address, start_server
from data_plane.settings import DataPlaneSettings, accepted_store_id, check_override
from data_plane.workers import SERVING_LINE, WORKER_LINE, run_workers


def build_parser() -> argparse.ArgumentParser:
    """The flags, each defaulting to None (= take the environment's value): building it reads no
    environment, so ``--help`` works whatever the ``AETHER_*`` variables hold. No abbreviations: the
    parent of ``--workers N`` strips only the full ``--workers`` spelling from its workers' flags, so
    ``--work 2`` made every worker start workers of its own (each failing "address already in use")."""
    parser = argparse.ArgumentParser(prog="python -m data_plane", description=__doc__, allow_abbrev=False)
    parser.add_argument("--listen", help="HOST:PORT (port 0 picks a free one)")
    parser.add_argument("--redis-url")
    parser.add_argument("--control-plane", dest="control_plane_addr", help="HOST:PORT")
    parser.add_argument("--snapshot-path", type=Path)
    parser.add_argument(
        "--accept-store-id",
        metavar="ID",
        type=_store_id_flag,
        help="follow the registry and deployment plans of the metadata database with this id even though "
        "those held came from another one (refused otherwise; the id is in the refusal's log line)",
    )
    parser.add_argument(
        "--model-config", type=Path, help="JSON file of ModelSpecs to serve besides the deployment plans"
    )
    parser.add_argument(
        "--metrics-listen", help="HOST:PORT of the Prometheus /metrics endpoint (empty: none)"
    )
    parser.add_argument("--intra-op-threads", type=int)
    parser.add_argument("--max-queue-size", type=int)
    parser.add_argument(
        "--inline-batch-below-us",
        type=float,
        help="batches measured shorter than this run on the event loop, not a worker thread (0: never)",
    )
    parser.add_argument("--prediction-log-sample-rate", type=float)
    parser.add_argument(
        "--near-cache-mb",
        type=float,
        help="MiB of online-store blobs kept in memory, dropped when Redis says they changed (0: off)",
    )
    parser.add_argument(
        "--near-cache-max-age-s",
        type=float,
        help="the longest a cached blob is served (Redis's invalidations drop it sooner)",
    )
    parser.add_argument(
        "--drain-delay-s",
        type=float,
        help="on SIGTERM, seconds of serving while NOT_SERVING before new requests are refused",
    )
    parser.add_argument(
        "--drain-grace-s", type=float, help="on SIGTERM, seconds admitted requests get to finish"
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes sharing the port")
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # set for workers
    # Set for workers too: the file their parent opened for them to agree on feature pins through.
    parser.add_argument("--feature-pins-fd", type=int, help=argparse.SUPPRESS)
    return parser


def _store_id_flag(text: str) -> str:
    try:
        return accepted_store_id(text, "--accept-store-id")
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _inherited_file(descriptor: int) -> int:
    """``descriptor`` when this process holds it open (its parent passed it), else ConfigurationError."""
    try:
        os.fstat(descriptor)
    except (OSError, OverflowError):
        raise ConfigurationError(
            f"--feature-pins-fd: {descriptor} is not an open file of this process"
        ) from None
    return descriptor


#: Flags that override a settings field of the same name when given.
_OVERRIDES = (
    "listen",
    "redis_url",
    "control_plane_addr",
    "snapshot_path",
    "accept_store_id",
    "model_config",
    "metrics_listen",
    "intra_op_threads",
    "max_queue_size",
    "inline_batch_below_us",
    "prediction_log_sample_rate",
    "near_cache_mb",
    "near_cache_max_age_s",
    "drain_delay_s",
    "drain_grace_s",
)


def parse_args(
    argv: Sequence[str] | None, environ: Mapping[str, str] | None = None
) -> tuple[DataPlaneSettings, int]:
    """Settings from the environment, the flags given overriding them. ConfigurationError (a
    ValueError naming the variable or file) for an environment value or a model config that cannot be
    used."""
    args = build_parser().parse_args(argv)
    settings = DataPlaneSettings.from_env(environ)
    overrides = {name: getattr(args, name) for name in _OVERRIDES if getattr(args, name) is not None}
    for name, value in overrides.items():  # the ranges their AETHER_* variables are held to
        check_override(name, value, "--" + name.replace("_", "-"))
    if args.workers < 1:  # 0 or less ran one process, as if the flag were not there
        raise ConfigurationError(f"--workers: expected a whole number >= 1, got {args.workers!r}")
    if args.reuse_port:
        overrides["reuse_port"] = True
    if args.feature_pins_fd is not None:
        overrides["feature_pins_fd"] = _inherited_file(args.feature_pins_fd)
    if settings.native_tensorrt:  # checked once at start, not found missing model by model
        from data_plane.runtime.tensorrt_engine import require_native

        require_native()
    settings = dataclasses.replace(settings, **overrides)
    try:  # a URL the client cannot use is one line here, not a traceback (with its password) at start
        RedisAddress.from_url(settings.redis_url)
    except ValueError as exc:
        raise ConfigurationError(f"AETHER_REDIS_URL / --redis-url: {exc}") from None
    if settings.model_config is not None:
        # Read here, before anything starts (the server reads it again when it loads the models), so a
        # file that cannot be used is one line (and exit 2), also for the parent of --workers.
        load_model_config(settings.model_config)
    return settings, args.workers


_log = logging.getLogger("aether.data_plane")

#: How long the start waits to reach the online store (at least; the Redis timeout when longer).
STORE_CHECK_S = 2.0


async def check_online_store(settings: DataPlaneSettings) -> None:
    """Dials the online store once before serving, so that a URL that can never work (a Redis Cluster
    node, a missing or wrong password) stops the start with one line instead of starting a server whose
    every read fails. A Redis that cannot be reached now does not stop it: reads answer UNAVAILABLE until
    it is back, as after any later outage."""
    client = RedisClient(settings.redis_url, pool_size=1)
    try:
        await client.connect(max(settings.redis_timeout_s, STORE_CHECK_S))
    except RedisMisconfigured as exc:
        raise FailedPrecondition(str(exc)) from None
    except RedisUnavailable as exc:
        _log.warning("online store: %s; starting anyway (reads answer UNAVAILABLE meanwhile)", exc)
    finally:
        await client.close()


async def serve(settings: DataPlaneSettings) -> None:
    await check_online_store(settings)
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
    if handle.worker_port is not None:  # read by the parent of --workers, which names every worker's
        print(f"{WORKER_LINE}{listen_address(settings, handle.worker_port)}", flush=True)
    if handle.metrics_port is not None:
        metrics_host = settings.metrics_listen.rsplit(":", 1)[0]
        print(f"aether data plane metrics on {metrics_host}:{handle.metrics_port}", flush=True)
    announce = asyncio.ensure_future(_announce_serving(handle.serving))
    await stop.wait()
    announce.cancel()
    await handle.drain(settings.drain_delay_s, settings.drain_grace_s)


async def _announce_serving(serving: asyncio.Event) -> None:
    await serving.wait()
    print(SERVING_LINE, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings, workers = parse_args(argv)
    except ConfigurationError as error:  # a setting to fix, not a bug: one line, no traceback
        print(f"python -m data_plane: error: {error}", file=sys.stderr)
        return 2
    try:
        if workers > 1:
            # Checked here too: a store no worker can use (a wrong password) is then this one line,
            # not "a data-plane worker failed to start: no output" beside each worker's own.
            uvloop.run(check_online_store(settings))
            return run_workers(settings, workers, list(sys.argv[1:] if argv is None else argv))
        if not settings.reuse_port:  # a worker's port was checked by its parent, which still holds it
            check_free(settings.listen)  # before the models load: a port in use is one line, at once
            if settings.metrics_listen:  # so is a metrics port in use, not a traceback once serving
                check_free(settings.metrics_listen)
        uvloop.run(serve(settings))
    except AetherError as exc:
        print(f"python -m data_plane: error: {exc.message}", file=sys.stderr)
        return 1
    except ConfigurationError as error:  # the model config changed between the check and the load
        print(f"python -m data_plane: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
