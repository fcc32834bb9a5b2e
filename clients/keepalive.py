"""HTTP/2 keepalive for long-lived watch streams, the client's pings and what the server accepts.

A watch stream (the registry, the deployment plans) can sit idle for hours. If its TCP path dies without
a reset (a crashed host, a partition, a NAT or load balancer dropping an idle flow), the client would
wait on it forever, still "connected", and never reconnect. Pings every ``WATCH_KEEPALIVE_S`` unanswered
within ``WATCH_KEEPALIVE_TIMEOUT_S`` fail the stream, and the watcher reconnects. The server must allow
pings that often, or it answers them with GOAWAY (too_many_pings)."""

from __future__ import annotations

from typing import Any

WATCH_KEEPALIVE_S = 20.0
WATCH_KEEPALIVE_TIMEOUT_S = 10.0


def watch_channel_options(
    keepalive_s: float = WATCH_KEEPALIVE_S, timeout_s: float = WATCH_KEEPALIVE_TIMEOUT_S
) -> list[tuple[str, Any]]:
    """Channel options of a watcher: ping every ``keepalive_s`` even without data in flight."""
    return [
        ("grpc.keepalive_time_ms", int(keepalive_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),  # a watch stream sends no data while idle
        # Else gRPC core spaces pings without data by 5 minutes whatever the keepalive time says.
        ("grpc.http2.min_sent_ping_interval_without_data_ms", int(keepalive_s * 1000)),
        # Any unanswered ping (keepalive's, or one gRPC sends itself) fails the connection this soon;
        # the default is a minute. A watch moves little data, so it needs no bandwidth probes either.
        ("grpc.http2.ping_timeout_ms", int(timeout_s * 1000)),
        ("grpc.http2.bdp_probe", 0),
    ]


def server_keepalive_options(min_ping_interval_s: float = 1.0) -> list[tuple[str, Any]]:
    """Server options that accept watchers' pings (as often as every ``min_ping_interval_s``)."""
    return [
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", int(min_ping_interval_s * 1000)),
        ("grpc.http2.max_ping_strikes", 0),  # never GOAWAY a client for pinging
    ]
