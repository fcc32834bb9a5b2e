"""Checking that the data plane's listening address is free, and stays its own, when it starts.

A ``--workers`` data plane binds its port with SO_REUSEPORT, and the kernel lets any number of sockets
of the same user with SO_REUSEPORT share a port: without these checks a second, independent ``--workers``
data plane (or any gRPC server: gRPC sets SO_REUSEPORT by default) on the same HOST:PORT would silently
listen next to the first, and the kernel would split the clients between them.

:func:`hold` / :func:`check_free`, before anything starts: a plain bind (SO_REUSEADDR, no SO_REUSEPORT)
fails on a port that anyone listens on, with SO_REUSEPORT or without. It cannot keep out a server that
starts listening with SO_REUSEPORT afterwards, while the workers load their models (no bound socket can:
one that fences such a server off also fences off the workers, or conflicts with a previous server's
connections in TIME_WAIT); :func:`sharing_listeners`, once every worker listens, finds one: any other
socket listening on the port at an address that overlaps the workers'. (One that starts listening later
still is let in by the kernel, and nothing here can tell.)
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

from clients.errors import FailedPrecondition

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_TCP_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
_LISTEN = "0A"  # the state column of a listening socket in those tables


def split_listen(listen: str) -> tuple[str, int]:
    host, port = listen.rsplit(":", 1)
    return host.strip("[]"), int(port)


def hold(listen: str) -> socket.socket:
    """A socket bound to ``listen`` (the kernel's pick of a free port for port 0), never listening, if
    nothing else holds the address; FailedPrecondition naming it otherwise. Bound with SO_REUSEADDR (as
    gRPC binds, so that connections of a previous run in TIME_WAIT do not count) and without
    SO_REUSEPORT: it fails on a port anyone listens on, with SO_REUSEPORT or without. Held, it keeps the
    port from automatic binds (port 0) and outgoing connections, while servers that set SO_REUSEADDR (the
    workers of ``--workers``) can still bind and listen beside it; it receives no connections."""
    host, port = split_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    held = socket.socket(family, socket.SOCK_STREAM)
    try:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind((host, port))
    except OSError as exc:
        held.close()
        reason = "the address is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise FailedPrecondition(f"cannot listen on {listen}: {reason}") from None
    return held


def check_free(listen: str) -> int:
    """The port of ``listen`` (the kernel's pick of a free one for port 0), if nothing else holds it;
    FailedPrecondition naming the address otherwise (:func:`hold`). The socket is closed again: a small
    window remains before the caller binds, which gRPC's own bind error covers for a single process (it
    does not set SO_REUSEPORT, so it never shares a port)."""
    with hold(listen) as probe:
        return int(probe.getsockname()[1])


def sharing_listeners(port: int, own_pids: Iterable[int]) -> list[str]:
    """``ADDRESS:PORT (pid N)`` of each socket listening on ``port`` that is not held by one of
    ``own_pids`` and whose address overlaps one of theirs there (the same address, or a wildcard on
    either side): a server the kernel splits their connections with. Empty where Linux's /proc is not
    there to tell (the check is then skipped). The pid is left out when the socket's holder cannot be
    found (another user's process, which cannot share the port with SO_REUSEPORT anyway)."""
    listening = dict(_listening_sockets(port))
    own = set().union(*(_socket_inodes(pid) for pid in own_pids))
    ours = [address for inode, address in listening.items() if inode in own]
    others = {
        inode: address
        for inode, address in listening.items()
        if inode not in own and (not ours or any(_overlap(address, mine) for mine in ours))
    }
    holders = _holders(set(others)) if others else {}
    return [
        _format(address, port) + (f" (pid {holders[inode]})" if inode in holders else "")
        for inode, address in sorted(others.items())
    ]


def _format(address: IPAddress, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def _overlap(a: IPAddress, b: IPAddress) -> bool:
    """Whether a connection to one of two listening addresses may reach a socket on the other."""
    a, b = _unmapped(a), _unmapped(b)
    if a.version == b.version:
        return a == b or a.is_unspecified or b.is_unspecified
    # IPv6's wildcard takes IPv4 connections too unless the socket set IPV6_V6ONLY, which the tables
    # do not show: counted as overlapping (a false refusal beside a v6-only server, never a silent share).
    return (a if a.version == 6 else b).is_unspecified


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _listening_sockets(port: int) -> Iterator[tuple[int, IPAddress]]:
    """(inode, local address) of each TCP socket listening on ``port`` in this network namespace."""
    for table in _TCP_TABLES:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, _, hex_port = fields[1].partition(":")
            if fields[3] == _LISTEN and int(hex_port, 16) == port:
                yield int(fields[9]), _table_address(address)


def _table_address(text: str) -> IPAddress:
    """An address as the tables write it: the bytes of each 32-bit word in host order (``=``: native)."""
    words = [int(text[i : i + 8], 16) for i in range(0, len(text), 8)]
    return ipaddress.ip_address(struct.pack(f"={len(words)}I", *words))


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:  # gone, or not ours to read
        return inodes
    for descriptor in descriptors:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{descriptor}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def _holders(inodes: set[int]) -> dict[int, int]:
    """inode -> pid of a process holding that socket, for the processes this one may look into."""
    found: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            for inode in _socket_inodes(int(entry)) & inodes:
                found.setdefault(inode, int(entry))
    return found
