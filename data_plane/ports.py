"""Checking that the data plane's listening address is free before anything starts.

A ``--workers`` data plane binds its port with SO_REUSEPORT, and the kernel lets any number of sockets
of the same user with SO_REUSEPORT share a port: without this check a second, independent ``--workers``
data plane started on the same HOST:PORT would silently bind next to the first, and the kernel would
split the clients between them. A plain bind (SO_REUSEADDR, as gRPC binds, so that connections of a
previous run in TIME_WAIT do not count; no SO_REUSEPORT) fails on a port that anyone listens on or holds.
"""

from __future__ import annotations

import errno
import socket

from clients.errors import FailedPrecondition


def split_listen(listen: str) -> tuple[str, int]:
    host, port = listen.rsplit(":", 1)
    return host.strip("[]"), int(port)


def check_free(listen: str) -> int:
    """The port of ``listen`` (the kernel's pick of a free one for port 0), if nothing else holds it;
    FailedPrecondition naming the address otherwise. The socket is closed again: a small window remains
    before the caller binds, which gRPC's own bind error covers for a single process."""
    host, port = split_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            reason = "the address is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise FailedPrecondition(f"cannot listen on {listen}: {reason}") from None
        return int(probe.getsockname()[1])
