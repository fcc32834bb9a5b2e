"""The stream materializer's command-line flags, apart from what runs it, so that ``aetherctl
materializer run`` offers the same flags (and ``--help``) without importing the materializer."""

from __future__ import annotations

import argparse
from urllib.parse import urlsplit

from clients.join_key_limit import (
    DEFAULT_MAX_JOIN_KEY_BYTES,
    MAX_JOIN_KEY_BYTES_LIMIT,
    MAX_JOIN_KEY_BYTES_VARIABLE,
)
from control_plane.cli.numbers import whole
from control_plane.cli.numbers import window_seconds as seconds
from control_plane.defaults import DEFAULT_REDIS_URL
from control_plane.ingestion.streaming import kafka_options
from control_plane.ingestion.streaming.stream_time import DEFAULT_MAX_FUTURE_SKEW_S

#: The schemes ``redis.Redis.from_url`` takes; any other URL ended the run in a ValueError traceback.
REDIS_SCHEMES = ("redis", "rediss", "unix")
#: ``--max-future-s`` at most 100 years: validation adds it to the current time, and a datetime past
#: year 9999 (99999999999999 s) ended the run in an OverflowError traceback.
MAX_FUTURE_S = 100 * 365 * 86_400
_INT32_MAX = 2**31 - 1
#: How ``--db-url`` and ``--offline-root`` name their defaults under ``AETHER_HOME`` (``default_db_url``,
#: ``default_offline_root``, whose modules this one does not import: tests/unit/cli/test_materializer_help.py
#: keeps them equal).
DEFAULT_DB_URL_SHOWN = "sqlite:///$AETHER_HOME/aether.db"
DEFAULT_OFFLINE_ROOT_SHOWN = "$AETHER_HOME/offline"
#: What ``--help`` says after the flags: the settings the materializer reads that no flag overrides.
SETTINGS_EPILOG = (
    f"settings without a flag: ${MAX_JOIN_KEY_BYTES_VARIABLE}: the longest string join key accepted, in bytes"
    f" of UTF-8 (default: {DEFAULT_MAX_JOIN_KEY_BYTES}, 1 to {MAX_JOIN_KEY_BYTES_LIMIT}); an event with a"
    " longer key is quarantined"
)


def redis_url(text: str) -> str:
    """A URL ``redis.Redis.from_url`` takes (empty: ``AETHER_REDIS_URL``)."""
    if text and urlsplit(text).scheme not in REDIS_SCHEMES:
        raise argparse.ArgumentTypeError(f"expected a redis://, rediss:// or unix:// URL, got {text!r}")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The materializer's flags, on its own parser or on ``aetherctl materializer run``."""
    parser.add_argument("--view", required=True, help="feature view name (required)")
    parser.add_argument(
        "--version",
        type=whole(0, 2**32 - 1),
        default=0,
        help="view version (default: %(default)s, the latest)",
    )
    parser.add_argument(
        "--stream",
        default="",
        help="Redis stream name, or kafka://host:port/topic (default: the view's source.uri)",
    )
    parser.add_argument("--group", default="materializer", help="consumer group (default: %(default)s)")
    kafka_options.add_flag(parser)  # the control plane takes the same flag, for the replay's producer
    parser.add_argument("--consumer", default="", help="consumer name (default: host-pid)")
    # The empty defaults stand for the variable, else its own default (``ControlPlaneSettings.from_env``,
    # ``default_offline_root``); the help says both, as the README's settings table does.
    parser.add_argument(
        "--db-url",
        default="",
        help=f"metadata database (default: $AETHER_DB_URL, else {DEFAULT_DB_URL_SHOWN})",
    )
    parser.add_argument(
        "--redis-url",
        type=redis_url,
        default="",
        help=f"online store (default: $AETHER_REDIS_URL, else {DEFAULT_REDIS_URL})",
    )
    parser.add_argument(
        "--offline-root",
        default="",
        help=f"offline store (default: $AETHER_OFFLINE_ROOT, else {DEFAULT_OFFLINE_ROOT_SHOWN})",
    )
    parser.add_argument(
        "--count", type=whole(1, _INT32_MAX), default=2000, help="messages per read (default: %(default)s)"
    )
    # At least 1: XREADGROUP BLOCK 0 waits forever, so an idle materializer would never see SIGTERM.
    parser.add_argument(
        "--block-ms",
        type=whole(1, _INT32_MAX),
        default=200,
        help="wait this long for messages per read (default: %(default)s)",
    )
    parser.add_argument(
        "--reclaim-idle-ms",
        type=whole(0, 2**63 - 1),
        default=30_000,
        help="reclaim pending entries idle this long (default: %(default)s)",
    )
    parser.add_argument(
        "--lateness-s",
        type=whole(0, MAX_FUTURE_S),
        default=3600,
        help="quarantine events reaching the stream later than this after their event time"
        " (default: %(default)s)",
    )
    parser.add_argument(
        "--max-future-s",
        type=whole(0, MAX_FUTURE_S),
        default=86_400,
        help="refuse events this far ahead of now (an event further ahead of its stream time than the skew"
        " below is quarantined too; default: %(default)s)",
    )
    parser.add_argument(
        "--max-future-skew-s",
        type=whole(0, MAX_FUTURE_S),
        default=DEFAULT_MAX_FUTURE_SKEW_S,
        help="quarantine messages whose stream time (Redis id, Kafka record time) is this far ahead of now"
        " (they do not move the stream time), and events this far ahead of their stream time (they would"
        " move their entity's windows ahead). A Redis stream's `*` ids are Redis's clock: a Redis host's"
        " clock off by more than this quarantines every event, and a run that refuses events by time"
        " compares it with this host's once and warns (default: %(default)s)",
    )
    parser.add_argument(
        "--lag-alert-s",
        type=seconds,
        default=60.0,
        help="log an alert when lag exceeds this (default: %(default)g)",
    )
    parser.add_argument(
        "--rules-every-s",
        type=seconds,
        default=10.0,
        help="read the view version's validation rules again this often (they are edited in place;"
        " default: %(default)g)",
    )
    parser.add_argument(
        "--metrics-port",
        type=whole(0, 65535),
        default=None,
        help="serve Prometheus metrics on this port (default: none served)",
    )
