"""``python -m control_plane.ingestion.streaming --view V``: run one stream materializer.

Reads the view (latest version unless ``--version``) from the metadata database, consumes its source
stream (``--stream``, default the view's ``source.uri``: a Redis stream name, or ``kafka://host:port/topic``
with the ``kafka`` extra) as consumer ``--consumer`` of group ``--group``,
and runs until SIGTERM/SIGINT. Prints ``aether materializer running view=V stream=S`` once its state is
rebuilt. Settings come from ``AETHER_*`` variables (``AETHER_DB_URL``, ``AETHER_REDIS_URL``,
``AETHER_CONTROL_PLANE_REDIS_TIMEOUT_S``,
``AETHER_OFFLINE_ROOT``, ``AETHER_HOME``, ``AETHER_KAFKA_OPTIONS_FILE``, ``AETHER_MAX_JOIN_KEY_BYTES``);
flags override them
(``--kafka-option`` key by key). The database is the control plane's: it is never created or migrated
here, and one that is missing or not at the newest schema is refused.
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

from clients.env_values import ConfigurationError
from clients.errors import AetherError, NotFound
from control_plane.db import create_session_factory, open_database
from control_plane.db.migrate import shown_url
from control_plane.features.registry import FeatureRegistry
from control_plane.ingestion.streaming import flags, kafka_options
from control_plane.ingestion.streaming.materializer import StreamMaterializer, ViewDeleted, ViewRetired
from control_plane.ingestion.streaming.options import MaterializerOptions
from control_plane.ingestion.streaming.redis_source import RedisStreamSource
from control_plane.ingestion.streaming.source import StreamSource
from control_plane.ingestion.streaming.stops import StopAsked
from control_plane.offline.roots import default_offline_root
from control_plane.offline.store import OfflineStore
from control_plane.settings import ControlPlaneSettings


def build_parser() -> argparse.ArgumentParser:
    # Options only as spelt in full, as aetherctl takes them (a prefix was taken for another flag).
    parser = argparse.ArgumentParser(
        prog="aether-materializer",
        description=__doc__.splitlines()[0],
        epilog=flags.SETTINGS_EPILOG,
        allow_abbrev=False,
    )
    flags.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Runs the materializer the parsed flags describe until SIGTERM/SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # The home folder is the control plane's to create: the materializer never creates the database in it
    # (see below), and a run in a shell without the stack's AETHER_HOME left an empty ``~/.aether``.
    settings = ControlPlaneSettings.from_env(create_home=False)
    redis_url = args.redis_url or settings.redis_url  # the flag's value is checked by its parser
    try:
        flags.redis_url(redis_url)
    except argparse.ArgumentTypeError as error:  # one line, not from_url's ValueError traceback
        print(f"error: AETHER_REDIS_URL: {error}", file=sys.stderr)
        return 2
    db_url = args.db_url or settings.db_url
    try:
        # The control plane creates and migrates the database; a URL that misses its one (a shell without
        # the stack's AETHER_HOME, a mistyped path) is refused rather than made into a new, empty one.
        engine = open_database(db_url, settings.db_busy_timeout_s, migrate=False)
    except ConfigurationError as error:  # one line naming the setting, not a traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    sessions = create_session_factory(engine)
    client = settings.redis_client(redis_url)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    # Closed on every way out (a stop, an error, the view gone): left open, a Kafka consumer stayed in its
    # group until the broker's session timeout (its partitions unread meanwhile), and a Redis consumer
    # stayed listed in its group for good, one more for every start (``StreamSource.close``).
    source: StreamSource | None = None
    try:
        registry = FeatureRegistry(sessions)
        view = registry.get_feature_view(args.view, args.version)
        entity = registry.get_entity(view.spec.entity)
        stream = args.stream or view.spec.source.uri
        if not stream:
            print(f"error: view {args.view!r} names no source stream; pass --stream", file=sys.stderr)
            return 2
        consumer = args.consumer or f"{socket.gethostname()}-{os.getpid()}"
        if stream.startswith("kafka://"):
            from control_plane.ingestion.streaming.kafka_publish import parse_kafka_url
            from control_plane.ingestion.streaming.kafka_source import KafkaSource

            bootstrap, topic = parse_kafka_url(stream)
            config = kafka_options.merged(settings.kafka_options, args.kafka_option)
            source = KafkaSource(bootstrap, topic, args.group, consumer, config, args.max_future_skew_s)
        else:
            source = RedisStreamSource(client, stream, args.group, consumer, stop, args.max_future_skew_s)
        options = MaterializerOptions(
            group=args.group, count=args.count, block_ms=args.block_ms, reclaim_idle_ms=args.reclaim_idle_ms,
            lateness_s=args.lateness_s, max_future=timedelta(seconds=args.max_future_s),
            lag_alert_seconds=args.lag_alert_s, metrics_port=args.metrics_port,
            rules_every_s=args.rules_every_s, max_join_key_bytes=settings.max_join_key_bytes,
        )  # fmt: skip
        offline = OfflineStore(args.offline_root or default_offline_root())
        materializer = StreamMaterializer(view, entity, source, client, sessions, offline, options, stop)
        materializer.start()
        print(f"aether materializer running view={view.spec.name} stream={stream}", flush=True)
        while not stop.is_set():
            materializer.step()
        materializer.flush()
        return 0
    except NotFound as error:  # which database was searched: it may not be the one the stack uses
        status, said = 1, f"error: {error.code.name}: {error.message} (in {shown_url(db_url)})"
    except AetherError as error:
        status, said = 1, f"error: {error.code.name}: {error.message}"
    except ConfigurationError as error:  # a Redis user without the scripting commands (redis_access.py)
        status, said = 2, f"error: {error}"
    except StopAsked as error:  # asked to stop during an outage: nothing lost (see StopAsked)
        status, said = 0, f"stopped: {error}"
    except (ViewDeleted, ViewRetired) as error:  # one line, not a traceback: the view is gone, not broken
        # Raised only once its outbox is drained (the committed batches stored offline and counted): no
        # other flush is due.
        status, said = 1, f"error: {error}"
    finally:
        if source is not None:
            source.close()  # before the client: the Redis source removes its consumer through it
        client.close()
        engine.dispose()
    # Said after the source is closed: what closing logs (a consumer it could not remove) came after the
    # reason the process stops, which must be its last line.
    print(said, file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
