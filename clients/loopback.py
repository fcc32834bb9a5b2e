"""Whether a gRPC target is this host, so that its channel bypasses an HTTP proxy.

gRPC honours ``http_proxy`` / ``grpc_proxy`` for every target, loopback ones too, and its ``no_proxy``
handling has varied by release: on a host with a proxy set for the outside world (common behind a
corporate proxy), each channel to a local control plane, data plane or replica went to the proxy and
failed UNAVAILABLE. A proxy cannot reach this host's loopback anyway, so such a channel connects directly.
"""

from __future__ import annotations

import ipaddress
from typing import Any

#: The channel option that turns gRPC's proxy support off for one channel.
NO_PROXY: tuple[str, Any] = ("grpc.enable_http_proxy", 0)

_SCHEMES = ("dns:///", "dns:", "ipv4:", "ipv6:")


def _host(target: str) -> str:
    for scheme in _SCHEMES:
        if target.startswith(scheme):
            target = target[len(scheme) :]
            break
    if target.startswith("["):  # [::1]:port
        return target[1:].partition("]")[0]
    if target.count(":") > 1:  # a bare IPv6 address, no port
        return target
    return target.rpartition(":")[0] if ":" in target else target


def is_loopback_target(target: str) -> bool:
    """``localhost``, ``127.0.0.0/8`` or ``::1``, as ``host:port`` or under the ``dns:``, ``ipv4:`` and
    ``ipv6:`` schemes; a ``unix:`` socket needs no proxy and other targets may need it."""
    host = _host(target.strip()).lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def proxy_options(target: str) -> list[tuple[str, Any]]:
    """The channel options that keep ``target``'s channel off an HTTP proxy when it is this host."""
    return [NO_PROXY] if is_loopback_target(target) else []
