"""A test server restarted on the same port keeps that port while it is down: stopped, its port refuses
connections as before, but no other process can bind it meanwhile (in CI another test worker did now and
then, and the restart failed "address already in use"). A real redis-server, stopped and started again."""

from __future__ import annotations

import errno
import socket

import pytest
import redis

from tests.support.ports import HeldPort, refused_address
from tests.support.redis_server import RedisServer


def _bind_fails(port: int) -> bool:
    """Whether a plain bind of ``port``, as another process's server would do, is refused."""
    with socket.socket() as thief:
        try:
            thief.bind(("127.0.0.1", port))
        except OSError as refused:
            return refused.errno == errno.EADDRINUSE
        return False


def test_a_stopped_redis_server_keeps_its_port_for_its_restart() -> None:
    server = RedisServer()
    try:
        server.start()
        server.stop()
        with pytest.raises(ConnectionRefusedError):  # down, as a stopped server is
            socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
        assert _bind_fails(server.port)  # yet nobody else's
        server.start()
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        client.close()
    finally:
        server.close()
    assert not _bind_fails(server.port)  # given up once the server is closed


def test_a_held_port_refuses_connections_and_other_binds_until_closed() -> None:
    with HeldPort() as held:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", held.port), timeout=5).close()
        assert _bind_fails(held.port)
        assert held.address == f"127.0.0.1:{held.port}"
    assert not _bind_fails(held.port)


def test_the_refused_address_refuses_connections_and_no_other_bind_takes_it() -> None:
    """What tests name as "nothing listens here" (a dead control plane, Redis, peer). A port picked and let
    go (``free_port``) was free for another test worker's server to bind before the test dialled it, and
    the test then talked to a live server; this one stays bound for the whole test process."""
    address = refused_address()
    host, _, port = address.rpartition(":")
    assert host == "127.0.0.1" and refused_address() == address  # one for the process
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=5).close()
    assert _bind_fails(int(port))
