"""Whether the local stack's services (:mod:`control_plane.cli.local_stack`) are up: a process alive and
being the service, a plane's health check, a Redis answering and which process it is."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.errors import FailedPrecondition
from clients.sdk.auth import open_channel
from clients.uris import redact_uri


def redis_pid(url: str) -> int | None:
    """The process id of the Redis answering at ``url`` (None when none answers). A PING alone was
    answered by another Redis on the address while the one just started had exited ("Address already in
    use"), and that one was reported started."""
    if not redis_answers(url):  # FailedPrecondition for refused credentials, as there
        return None
    client = redis.Redis.from_url(url, socket_connect_timeout=0.2, socket_timeout=0.5)
    try:
        # cast: redis-py types its commands for the async client too (Awaitable | Any).
        info = cast(dict[str, Any], client.info("server"))
        return int(info["process_id"])
    except (redis.RedisError, KeyError, ValueError):
        return None
    finally:
        client.close()


def serving(address: str) -> bool:
    with open_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
        except grpc.RpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def redis_answers(url: str) -> bool:
    """Whether a Redis at ``url`` answers PING; FailedPrecondition when one answers but refuses the URL's
    credentials, which no waiting mends (this was taken for "not ready yet" until ``--wait`` ran out)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=0.2, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.AuthenticationError as error:
        raise FailedPrecondition(
            f"redis at {redact_uri(url)} refuses the credentials of AETHER_REDIS_URL ({error}); "
            "is another redis-server, with another password, listening there?"
        ) from None
    except redis.RedisError:
        return False
    finally:
        client.close()


def alive(pid: int, marker: str) -> bool:
    try:
        # Reaps it when it is our own child (started by this process), so it does not linger as a zombie.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    proc = Path(f"/proc/{pid}")
    if not proc.exists():  # no procfs (macOS): trust the signal check
        return True
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z" and marker in command


def listening_ports(pid: int) -> frozenset[int] | None:
    """The TCP ports process ``pid`` listens on (IPv4 and IPv6), from procfs: its socket inodes matched
    against ``/proc/<pid>/net/tcp{,6}`` rows in state LISTEN. None where that cannot be read (no procfs,
    another user's process)."""
    proc = Path(f"/proc/{pid}")
    try:
        inodes = set()
        for fd in (proc / "fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
        ports: set[int] = set()
        for table in ("tcp", "tcp6"):
            path = proc / "net" / table
            if not path.exists():
                continue
            for line in path.read_text().splitlines()[1:]:
                fields = line.split()
                # local_address is HEX_IP:HEX_PORT; state 0A is LISTEN; field 9 is the socket's inode.
                if len(fields) > 9 and fields[3] == "0A" and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    except OSError:
        return None
    return frozenset(ports)


def working_folder(pid: int) -> Path | None:
    """Process ``pid``'s working folder (None without procfs, or another user's process)."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")).resolve()
    except OSError:
        return None


def process_environment(pid: int) -> dict[str, str] | None:
    """The environment process ``pid`` was started with (``/proc/PID/environ``); None when it cannot be
    read (gone, another user's, no /proc)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    environment: dict[str, str] = {}
    for entry in raw.split(b"\0"):
        name, equals, value = entry.partition(b"=")
        if equals:
            environment[os.fsdecode(name)] = os.fsdecode(value)
    return environment
