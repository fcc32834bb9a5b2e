"""A loopback port a test keeps for itself while the server on it stops and starts again.

A test that stops a server and starts the next on the same port (a restart that clients reconnect to by
themselves) used to leave the port free in between, and on a busy CI host another test worker's server or
outgoing connection took it now and then: the restart failed "address already in use". ``HeldPort`` binds
the port with SO_REUSEADDR and never listens, for as long as the test holds it. Linux then lets a server
that also sets SO_REUSEADDR (redis-server and gRPC servers do) bind and listen on it beside the hold, and
while no server listens a connection is refused, as it was; but the kernel never hands the port to an
automatic bind (port 0: other workers' servers, ``free_port``) or to an outgoing connection, since it is
bound.

The same goes for a server that must be told its port before it starts (a control plane that tells its
jobs the address it was configured with, a subprocess given ``--port``): a port picked with ``free_port``
and let go was free for anyone until the server bound it; held, it is the test's from the start."""

from __future__ import annotations

import functools
import socket
from types import TracebackType


class HeldPort:
    """A free loopback port, bound (not listening) until :meth:`close`."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._socket = socket.socket()
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, 0))
        self.host = host
        self.port: int = self._socket.getsockname()[1]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> HeldPort:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


@functools.cache
def _refusing() -> HeldPort:
    return HeldPort()


def refused_address() -> str:
    """A loopback ``HOST:PORT`` where nothing listens for as long as this process runs: a connection to it
    is refused. A port picked with ``free_port`` and let go (what such tests used) may be taken meanwhile
    by another test worker's server (an automatic bind, port 0, or ``free_port`` again), which a client
    meant to find nothing there then reached; this one stays bound (:class:`HeldPort`), so no automatic
    bind gets it."""
    return _refusing().address
