"""``python -m control_plane.ingestion.streaming --view V``: run one stream materializer.

Reads the view (latest version unless ``--version``) from the metadata database, consumes its source
stream (``--stream``, default the view's ``source.uri``: a Redis stream name, or ``kafka://host:port/topic``
with the ``kafka`` extra) as consumer ``--consumer`` of group ``--group``,
and runs until SIGTERM/SIGINT. Prints ``aether materializer running view=V stream=S`` once its state is
rebuilt. Settings come from ``AETHER_*`` variables (``AETHER_DB_URL``, ``AETHER_REDIS_URL``,
``AETHER_OFFLINE_ROOT``, ``AETHER_HOME``); flags override them.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from datetime import timedelta

import redis

from clients.errors import AetherError
from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head
from control_plane.features.registry import FeatureRegistry
from control_plane.ingestion.streaming.materializer import MaterializerOptions, StreamMaterializer
from control_plane.ingestion.streaming.redis_source import RedisStreamSource
from control_plane.ingestion.streaming.source import StreamSource
from control_plane.offline.store import OfflineStore, default_offline_root
from control_plane.settings import ControlPlaneSettings


def _key_value(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not key or not equals:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aether-materializer", description=__doc__.splitlines()[0])
    parser.add_argument("--view", required=True)
    parser.add_argument("--version", type=int, default=0)
    parser.add_argument(
        "--stream",
        default="",
        help="Redis stream name, or kafka://host:port/topic (default: the view's source.uri)",
    )
    parser.add_argument("--group", default="materializer", help="consumer group")
    parser.add_argument(
        "--kafka-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=_key_value,
        help="a librdkafka setting for a kafka:// stream (repeatable), e.g. session.timeout.ms=10000",
    )
    parser.add_argument("--consumer", default="", help="consumer name (default: host-pid)")
    parser.add_argument("--db-url", default="")
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--offline-root", default="")
    parser.add_argument("--count", type=int, default=2000, help="messages per read")
    parser.add_argument("--block-ms", type=int, default=200)
    parser.add_argument(
        "--reclaim-idle-ms", type=int, default=30_000, help="reclaim pending entries idle this long"
    )
    parser.add_argument(
        "--lateness-s", type=int, default=3600, help="stream time re-read beyond the longest window"
    )
    parser.add_argument(
        "--max-future-s", type=int, default=86_400, help="refuse events this far ahead of now"
    )
    parser.add_argument("--lag-alert-s", type=float, default=60.0, help="log an alert when lag exceeds this")
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = ControlPlaneSettings.from_env()
    engine = create_db_engine(args.db_url or settings.db_url, settings.db_busy_timeout_s)
    upgrade_to_head(engine)
    sessions = create_session_factory(engine)
    client = redis.Redis.from_url(args.redis_url or settings.redis_url)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        registry = FeatureRegistry(sessions)
        view = registry.get_feature_view(args.view, args.version)
        entity = registry.get_entity(view.spec.entity)
        stream = args.stream or view.spec.source.uri
        if not stream:
            print(f"error: view {args.view!r} names no source stream; pass --stream", file=sys.stderr)
            return 2
        consumer = args.consumer or f"{socket.gethostname()}-{os.getpid()}"
        source: StreamSource
        if stream.startswith("kafka://"):
            from control_plane.ingestion.streaming.kafka_source import KafkaSource, parse_kafka_url

            bootstrap, topic = parse_kafka_url(stream)
            source = KafkaSource(bootstrap, topic, args.group, consumer, dict(args.kafka_option))
        else:
            source = RedisStreamSource(client, stream, args.group, consumer)
        options = MaterializerOptions(
            group=args.group, count=args.count, block_ms=args.block_ms, reclaim_idle_ms=args.reclaim_idle_ms,
            lateness_s=args.lateness_s, max_future=timedelta(seconds=args.max_future_s),
            lag_alert_seconds=args.lag_alert_s, metrics_port=args.metrics_port,
        )  # fmt: skip
        offline = OfflineStore(args.offline_root or default_offline_root())
        materializer = StreamMaterializer(view, entity, source, client, sessions, offline, options)
        materializer.start()
        print(f"aether materializer running view={view.spec.name} stream={stream}", flush=True)
        while not stop.is_set():
            materializer.step()
        materializer.flush()
        return 0
    except AetherError as error:
        print(f"error: {error.code.name}: {error.message}", file=sys.stderr)
        return 1
    finally:
        client.close()
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
