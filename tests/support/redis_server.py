"""A real redis-server process on a free loopback port, for tests and benchmarks.

Persistence is off (no RDB, no AOF) so each server starts empty; ``stop()`` and ``start()`` on the same
object restart it on the same port, which the fault tests use to show that reads recover by themselves.
A server that picked its own port holds it (``HeldPort``) until ``close()``, so no other process takes it
while the server is stopped.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.ports import HeldPort


@contextlib.contextmanager
def user_without_eval(redis_url: str) -> Iterator[str]:
    """The URL of an ACL user of the Redis at ``redis_url`` (database 0) granted every command but EVAL
    (EVALSHA and SCRIPT LOAD included: what Aether's scripts need), removed afterwards: the server is
    shared, and a flush keeps users."""
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser(
        "no_eval", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-eval", "-eval_ro"]
    )
    try:
        yield f"redis://no_eval:pw@{redis_url.removeprefix('redis://').rsplit('/', 1)[0]}/0"
    finally:
        admin.acl_deluser("no_eval")
        admin.close()


def free_port() -> int:
    """A loopback port free now, and let go at once: anyone may take it next (another test worker's
    server, an automatic bind). Tests want ``refused_address()`` for an address nothing listens on and a
    ``HeldPort`` for a server started on it later; this is left for the benchmarks, which run alone."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    def __init__(
        self, port: int | HeldPort | None = None, *, args: Sequence[str] = (), password: str | None = None
    ) -> None:
        """``args``: more redis-server options (``--requirepass`` needs ``password`` too, for the check
        that the server is up). ``port``: None for a free one, held until :meth:`close`; a
        :class:`HeldPort` the caller picked, which the server then holds until :meth:`close` as well."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH: apt-get install redis-server")
        self.binary = binary
        self._held: HeldPort | None = None
        if port is None:
            port = HeldPort()
        if isinstance(port, HeldPort):
            self._held = port
            port = port.port
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="aether-redis-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.args = tuple(args)
        self.password = password

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--daemonize",
                "no",
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        # No retries: redis-py's client retries a refused connection three times with a random backoff of
        # up to 2, 4 and 8 s, so the first PING, sent before the server listens, took a second on average
        # to come back, where this loop polls every 20 ms.
        client = redis.Redis(
            port=self.port, password=self.password, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
        )
        while True:
            try:
                client.ping()
                client.close()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def close(self) -> None:
        self.stop()
        if self._held is not None:
            self._held.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def cluster_node() -> RedisServer:
    """A redis-server with cluster mode on (not started), on a port held until it is closed: picked free
    and let go, another test worker's server could take it before this one started. The port must leave
    room for the cluster bus port, 10,000 above it, or redis-server exits at start; free ports are often
    higher (those are let go again)."""
    held = HeldPort()
    while held.port > 55535:
        held.close()
        held = HeldPort()
    return RedisServer(held, args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
