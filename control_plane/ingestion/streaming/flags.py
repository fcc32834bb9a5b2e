"""The stream materializer's command-line flags, apart from what runs it, so that ``aetherctl
materializer run`` offers the same flags (and ``--help``) without importing the materializer."""

from __future__ import annotations

import argparse

from control_plane.ingestion.streaming import kafka_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The materializer's flags, on its own parser or on ``aetherctl materializer run``."""
    parser.add_argument("--view", required=True)
    parser.add_argument("--version", type=int, default=0)
    parser.add_argument(
        "--stream",
        default="",
        help="Redis stream name, or kafka://host:port/topic (default: the view's source.uri)",
    )
    parser.add_argument("--group", default="materializer", help="consumer group")
    kafka_options.add_flag(parser)  # the control plane takes the same flag, for the replay's producer
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
