"""``data_plane.ports.sharing_listeners``: which other sockets listening on a port would share its
connections, with real sockets (this process's, and another process's: the kernel's tables list both)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from data_plane.ports import sharing_listeners

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc")

_LISTENER = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
sock.bind((host, port))
sock.listen()
print("listening", flush=True)
sys.stdin.read()
"""


def _reuse_port_listener(host: str, port: int = 0) -> socket.socket:
    """A socket listening as a --workers worker does (gRPC: SO_REUSEADDR and SO_REUSEPORT)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen()
    return sock


@contextlib.contextmanager
def _other_process_listening(host: str, port: int) -> Iterator[int]:
    """Another process (its pid) listening on HOST:PORT with SO_REUSEPORT, as a gRPC server does."""
    process = subprocess.Popen(
        [sys.executable, "-c", _LISTENER, host, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == b"listening\n"
        yield process.pid
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait()


@pytest.mark.parametrize(
    ("ours", "theirs", "shown"),
    [
        ("127.0.0.1", "127.0.0.1", "127.0.0.1"),
        ("0.0.0.0", "127.0.0.1", "127.0.0.1"),  # a wildcard takes what the specific address does not
        ("127.0.0.1", "0.0.0.0", "0.0.0.0"),
        ("::", "127.0.0.1", "127.0.0.1"),  # IPv6's wildcard takes IPv4 connections too
        ("127.0.0.1", "::", "[::]"),
        ("::1", "::1", "[::1]"),
        ("::1", "::", "[::]"),
    ],
)
def test_another_process_listening_on_an_overlapping_address_is_named(
    ours: str, theirs: str, shown: str
) -> None:
    with _reuse_port_listener(ours) as mine:
        port = mine.getsockname()[1]
        with _other_process_listening(theirs, port) as pid:
            assert sharing_listeners(port, [os.getpid()]) == [f"{shown}:{port} (pid {pid})"]


@pytest.mark.parametrize(
    ("ours", "theirs"), [("127.0.0.1", "127.0.0.2"), ("127.0.0.1", "::1"), ("::1", "127.0.0.1")]
)
def test_a_listener_on_another_address_of_the_port_shares_nothing(ours: str, theirs: str) -> None:
    with _reuse_port_listener(ours) as mine:
        port = mine.getsockname()[1]
        with _other_process_listening(theirs, port):
            assert sharing_listeners(port, [os.getpid()]) == []


def test_the_own_listeners_alone_share_nothing() -> None:
    with _reuse_port_listener("127.0.0.1") as first:
        port = first.getsockname()[1]
        with _reuse_port_listener("127.0.0.1", port):  # a second worker of the same data plane
            assert sharing_listeners(port, [os.getpid()]) == []
