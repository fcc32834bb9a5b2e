"""The services of the local stack (``control_plane.cli.local_stack``) and the pid files that name them:
which process a pid file may be trusted to name. A stale file left by a crash, or a pid the system has
since reused, must never make ``dev down`` signal a stranger or ``dev up`` wait for one."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from control_plane.cli.stack_probes import alive, listening_ports, working_folder

DEFAULT_REDIS_PORT = 6379  # a redis:// URL without a port


@dataclass(frozen=True)
class Service:
    key: str  # names its files: <key>.pid, <key>.log
    title: str
    command: list[str]
    marker: str  # a piece of its command line that identifies it in /proc/<pid>/cmdline
    env: Mapping[str, str]  # added to its environment
    address: str  # where it is configured to listen; a plane's log line gives the real one
    ready_line: re.Pattern[str] | None  # None: ready when redis answers PING
    # Files written, readable by this user only, before it starts (a secret kept off its command line).
    private_files: Mapping[Path, str] = field(default_factory=dict)


def running_pid(service: Service, folder: Path) -> int | None:
    """The pid in the service's pid file when that process is alive and is the service."""
    try:
        pid = int((folder / f"{service.key}.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if not alive(pid, service.marker):
        return None
    if service.ready_line is None and not may_serve(service, pid, service.address):
        return None  # a redis-server, but not the one at AETHER_REDIS_URL: not this stack's
    return pid


def may_serve(service: Service, pid: int, url: str) -> bool:
    """Whether redis-server ``pid`` may be this stack's: it is when it runs on the stack's data folder (its
    ``--dir``, its working folder), whatever its port (AETHER_REDIS_URL moved since `dev up`: it is still
    the stack's to stop, and a second one on the same append-only files would be started beside it);
    otherwise not when it listens on TCP ports and none is the URL's. A stale pid file (its pid reused by
    another redis-server) named a process that was shown as "not answering (stopping?)", that `dev up`
    waited for, and that `dev down` then stopped. A Redis that listens on nothing (stopping: it closed its
    listeners) or whose sockets cannot be read is given the benefit of the doubt."""
    # redis-server rewrites its command line (its title shows the address), and works in its --dir.
    data_dir = service.command[service.command.index("--dir") + 1] if "--dir" in service.command else None
    if data_dir is not None and working_folder(pid) == Path(data_dir).resolve():
        return True
    ports = listening_ports(pid)
    port = urlsplit(url).port or DEFAULT_REDIS_PORT
    return not ports or port in ports


def remove_pid_file(service: Service, folder: Path) -> None:
    (folder / f"{service.key}.pid").unlink(missing_ok=True)
