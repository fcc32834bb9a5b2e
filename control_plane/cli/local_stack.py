"""The local stack of ``aetherctl dev up|down|status`` (and of ``aetherctl demo``): redis-server, the
control plane and the data plane.

Each service runs detached (its own session, so it outlives the shell command) with its output in
``$AETHER_HOME/dev/<service>.log`` and its pid in ``$AETHER_HOME/dev/<service>.pid``. A pid file is only
trusted when the process it names is alive and its command line is the expected one, so a stale file
left by a crash (or a pid the system has since reused) never makes ``dev down`` signal a stranger.

``dev up`` and ``dev down`` hold an exclusive lock on ``$AETHER_HOME/dev/stack.lock`` (``flock``: the
kernel drops it when the command ends, however it ends) from start to end, and a second one waits for it
(bounded): two at once on one AETHER_HOME both started every service, wrote the same pid files and
truncated the same logs, and both said "started", one of them for a redis-server that had exited at once
("Address already in use") while the other's answered its PING. The services themselves never hold the
lock (Python opens files close-on-exec). And a Redis is only taken as ready when the one answering is
the process just started (its ``INFO`` pid), so one that exits during startup is reported as failed.

A live service is only "running" when it answers as a ready one does: a control plane stops answering at
SIGTERM while its process lives on to drain, and was reported running (``dev up`` started nothing) while
every call was refused. ``dev status`` shows such a one as not answering, and ``dev up`` waits (``--wait``)
for it to answer or exit, starting a new one once it exited, or fails naming it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import control_plane
from clients.errors import FailedPrecondition
from clients.files import private_folder
from clients.lifeline import tied
from clients.uris import redact_uri
from control_plane.cli import output
from control_plane.cli.settings import CliSettings
from control_plane.cli.stack_credentials import data_plane_token, redis_auth_config
from control_plane.cli.stack_lock import stack_lock
from control_plane.cli.stack_probes import (
    alive,
    listening_ports,
    process_environment,
    redis_answers,
    redis_pid,
    serving,
)
from control_plane.cli.stack_services import Service, remove_pid_file, running_pid

_INSTALL_REDIS = (
    "redis-server is not on PATH; install it first: `sudo apt-get install redis-server` (Debian/Ubuntu), "
    "`sudo dnf install redis` (Fedora) or `brew install redis` (macOS)"
)


def run(args: argparse.Namespace, settings: CliSettings) -> int:
    """Runs a ``dev`` action (its flags: ``control_plane.cli.dev``)."""
    folder = settings.home / "dev"
    services = _services(settings, folder, starting=args.action == "up")
    if args.action == "up":
        with stack_lock(folder, wait_s=args.wait):
            return _up(services, folder, settings, args.wait)
    if args.action == "down":
        with stack_lock(folder, wait_s=_down_lock_wait(args.grace)):
            return _down(services, folder, args.grace)
    return _status(services, folder)


def control_plane_environment(settings: CliSettings) -> Mapping[str, str] | None:
    """The environment this stack's running control plane was started with (what its drain follows, see
    ``control_plane.cli.dev.down_grace``); None when it does not run or its environment cannot be read."""
    folder = settings.home / "dev"
    plane = next(s for s in _services(settings, folder, starting=False) if s.key == "control-plane")
    pid = running_pid(plane, folder)
    return None if pid is None else process_environment(pid)


def _down_lock_wait(grace_s: float) -> float:
    """How long ``dev down`` waits for another command's lock: long enough for a ``dev up`` to finish
    starting, or a ``dev down`` to stop, every service."""
    return max(60.0, 3 * grace_s + 10.0)


def _services(settings: CliSettings, folder: Path, starting: bool = True) -> list[Service]:
    """The stack's services; ``starting``: for ``up`` (its Redis's config is read from the URL, a URL it
    cannot use is refused), not for ``down`` or ``status``, which start nothing and must work with
    whatever URL is set."""
    redis_url = urlsplit(settings.redis_url)
    host, port = redis_url.hostname or "127.0.0.1", redis_url.port or 6379
    data_dir = folder / "redis"
    python = sys.executable
    # The URL's credentials go in a config file, not on the command line, which any user of the host
    # reads (ps); redis-server takes the file first, then the options after it.
    config = redis_auth_config(settings.redis_url) if starting else ""
    config_path = folder / "redis.conf"
    config_args = [str(config_path)] if config else []
    return [
        Service(
            key="redis",
            title="redis",
            # Persistent like the rest of AETHER_HOME (SQL, offline store, snapshot): an append-only file
            # in the stack's folder, so `dev down` + `dev up` keeps online values, streams and the log.
            command=[shutil.which("redis-server") or "redis-server", *config_args,
                     "--bind", host, "--port", str(port),
                     "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
                     "--dir", str(data_dir), "--daemonize", "no"],
            marker="redis-server",
            env={},
            address=settings.redis_url,
            ready_line=None,
            private_files={config_path: config} if config else {},
        ),
        Service(
            key="control-plane",
            title="control plane",
            # The URLs go in the environment, not on the command line: they may hold passwords, and any
            # user of the host reads a command line (ps).
            command=[python, "-m", "control_plane", "--listen", settings.control_plane_addr],
            marker="control_plane",
            env={"AETHER_DB_URL": settings.db_url, "AETHER_REDIS_URL": settings.redis_url},
            address=settings.control_plane_addr,
            ready_line=re.compile(r"aether control plane listening on (\S+)"),
        ),
        Service(
            key="data-plane",
            title="data plane",
            # No --snapshot-path: it would override AETHER_REGISTRY_SNAPSHOT_PATH, which the data plane
            # reads itself (unset: registry_snapshot.pb in the AETHER_HOME it is started with).
            command=[python, "-m", "data_plane", "--listen", settings.data_plane_addr,
                     "--control-plane", settings.control_plane_addr],
            marker="data_plane",
            env={**data_plane_token(os.environ), "AETHER_REDIS_URL": settings.redis_url},
            address=settings.data_plane_addr,
            ready_line=re.compile(r"aether data plane listening on (\S+)"),
        ),
    ]  # fmt: skip


# up ------------------------------------------------------------------------------------------------


def _up(
    services: list[Service],
    folder: Path,
    settings: CliSettings,
    wait_s: float,
    extra_env: Mapping[str, str] | None = None,
    tie: bool = False,
    environ: Mapping[str, str] | None = None,
) -> int:
    if shutil.which("redis-server") is None and running_pid(services[0], folder) is None:
        raise FailedPrecondition(_INSTALL_REDIS)
    # The stack's logs and Redis's data (the online store) are the owner's, as is AETHER_HOME above.
    private_folder(folder / "redis")
    rows: list[tuple[object, ...]] = []
    started: list[Service] = []
    try:
        for service in services:
            pid = running_pid(service, folder)
            if pid is not None and not _answers(service, folder, pid):
                pid = _answer_or_exit(service, folder, pid, wait_s)  # None: it exited, start a new one
            if pid is not None:
                rows.append(_row(service, folder, "already running", pid))
            elif service.ready_line is None and redis_answers(service.address):
                rows.append(
                    (
                        service.title,
                        "already running (not started by aetherctl)",
                        redact_uri(service.address),
                        "-",
                        "-",
                    )
                )
            else:
                pid = _start(service, folder, settings, wait_s, extra_env, tie, environ)
                started.append(service)
                rows.append(_row(service, folder, "started", pid))
    except FailedPrecondition:
        # All or nothing: a stack where one service failed is stopped again rather than left half up.
        for service in reversed(started):
            _stop(service, folder, grace_s=5.0)
        raise
    print(output.table(("SERVICE", "STATE", "ADDRESS", "PID", "LOG"), rows))
    return 0


def _answer_or_exit(service: Service, folder: Path, pid: int, wait_s: float) -> int | None:
    """Waits, at most ``wait_s``, for a live ``service`` that does not answer (a control plane draining
    after SIGTERM: it stops answering at once, its process lives on a while) to answer (its pid) or exit
    (None); FailedPrecondition naming it when it does neither. Taken as "already running", it was left
    alone and nothing answered the stack's calls; a new one beside it could not bind its address."""
    print(
        f"{service.title} (pid {pid}) is alive but does not answer (stopping?); waiting up to {wait_s:g}s"
        " for it to answer or exit",
        file=sys.stderr,
        flush=True,
    )
    deadline = time.monotonic() + wait_s
    while alive(pid, service.marker):
        if _answers(service, folder, pid):
            return pid
        if time.monotonic() > deadline:
            log_path = folder / f"{service.key}.log"
            raise FailedPrecondition(
                f"{service.title} (pid {pid}) is alive but did not answer within {wait_s:g}s (stopping?);"
                " wait for it to exit, or stop it with `aetherctl dev down`, then run `aetherctl dev up`"
                f" again; last lines of {log_path}:\n{_tail(log_path)}"
            )
        time.sleep(0.1)
    return None


def _answers(service: Service, folder: Path, pid: int) -> bool:
    """Whether ``service`` (its process ``pid``, alive, started before) answers as a ready one does
    (``_is_ready``). A plane's log truncated since it started (logrotate's copytruncate) has lost its
    "listening on" line: then it answers at its configured address when that is its own socket."""
    log_path = folder / f"{service.key}.log"
    if service.ready_line is None or _listening_address(service, log_path) is not None:
        return _is_ready(service, log_path, pid)
    address = _owned_address(service.address, pid)
    return address is not None and serving(address)


def service_environment(
    service: Service,
    settings: CliSettings,
    base: Mapping[str, str],
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment ``service`` is started with: ``base``, its own variables, ``extra_env``, and the
    stack's ``AETHER_HOME``."""
    env = {**base, **service.env, **(extra_env or {}), "AETHER_HOME": str(settings.home)}
    # The planes are started as modules: make sure the child imports this very checkout of Aether.
    source_root = str(Path(next(iter(control_plane.__path__))).resolve().parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source_root, env.get("PYTHONPATH")]))
    return env


def _start(
    service: Service,
    folder: Path,
    settings: CliSettings,
    wait_s: float,
    extra_env: Mapping[str, str] | None = None,
    tie: bool = False,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Starts ``service`` and waits until it is ready. ``tie``: it ends when this process does, however
    this one ends (:mod:`clients.lifeline`); ``dev up`` leaves it out, its stack outlives the command."""
    log_path = folder / f"{service.key}.log"
    # extra_env: settings for this stack only (the demo's short loop intervals, for instance); environ:
    # the environment it starts from (the demo's drops the user's AETHER_* settings), default this one's.
    env = service_environment(service, settings, os.environ if environ is None else environ, extra_env)
    for path, text in service.private_files.items():
        _write_private(path, text)
    command, pass_fds = tied(service.command) if tie else (service.command, ())
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command,
            pass_fds=pass_fds,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # detached: no SIGINT from the terminal that ran `dev up`
        )
    (folder / f"{service.key}.pid").write_text(f"{process.pid}\n")
    try:
        _wait_until_ready(service, process, folder, wait_s)
    except FailedPrecondition:
        _stop(service, folder, grace_s=5.0)
        raise
    return process.pid


def _wait_until_ready(
    service: Service, process: subprocess.Popen[bytes], folder: Path, wait_s: float
) -> None:
    log_path = folder / f"{service.key}.log"
    deadline = time.monotonic() + wait_s
    while not _is_ready(service, log_path, process.pid):
        if process.poll() is not None:
            remove_pid_file(service, folder)
            raise FailedPrecondition(
                f"{service.title} exited with status {process.returncode} before it was ready; "
                f"last lines of {log_path}:\n{_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            raise FailedPrecondition(
                f"{service.title} was not ready after {wait_s:g}s; "
                f"last lines of {log_path}:\n{_tail(log_path)}"
            )
        time.sleep(0.05)


def _write_private(path: Path, text: str) -> None:
    """``text`` in ``path``, readable and writable by this user only (also when the file existed)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        os.fchmod(descriptor, 0o600)
        file.write(text)


def _is_ready(service: Service, log_path: Path, pid: int) -> bool:
    """Redis ``pid`` answers (not another Redis on its address: see :func:`redis_pid`); a plane has
    logged where it listens (in its own log, written from its start) and its health check says SERVING
    (the data plane says so only once it holds a registry snapshot, so it is ready to answer reads)."""
    if service.ready_line is None:
        return redis_pid(service.address) == pid
    address = _listening_address(service, log_path)
    return address is not None and serving(address)


def _owned_address(address: str, pid: int) -> str | None:
    """``address`` when process ``pid`` listens on its port (None for port 0, or when it does not, or its
    sockets cannot be read). Only for a plane running since before: a freshly started one must log its
    own line, else another server already answering there passed for it while it failed to bind."""
    port = address.rsplit(":", 1)[-1]
    ports = listening_ports(pid)
    return address if port.isdigit() and ports and int(port) in ports else None


def _listening_address(service: Service, log_path: Path) -> str | None:
    if service.ready_line is None:
        return service.address
    try:
        match = service.ready_line.search(log_path.read_text(errors="replace"))
    except FileNotFoundError:
        return None
    return match.group(1) if match else None


# down and status -----------------------------------------------------------------------------------


def _down(services: list[Service], folder: Path, grace_s: float) -> int:
    rows = []
    for service in reversed(services):  # dependents first: data plane, control plane, then redis
        rows.append((service.title, _stop(service, folder, grace_s)))
    print(output.table(("SERVICE", "STATE"), reversed(rows)))
    return 0


def _stop(service: Service, folder: Path, grace_s: float) -> str:
    pid = running_pid(service, folder)
    if pid is None:
        remove_pid_file(service, folder)
        return "not running"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    state = f"stopped (pid {pid})"
    while alive(pid, service.marker):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            state = f"killed after {grace_s:g}s (pid {pid})"
            while alive(pid, service.marker):
                time.sleep(0.02)
            break
        time.sleep(0.05)
    remove_pid_file(service, folder)
    return state


def _status(services: list[Service], folder: Path) -> int:
    rows = []
    all_running = True
    for service in services:
        pid = running_pid(service, folder)
        try:
            answers = pid is not None and _answers(service, folder, pid)
            deaf = "not answering (stopping?)"
        except FailedPrecondition:  # a Redis refusing the URL's credentials
            answers, deaf = False, "refuses AETHER_REDIS_URL's credentials"
        if pid is not None and not answers:
            # Alive yet deaf (stopping, or still starting): "running" told the user a stack was up that
            # refused every call.
            all_running = False
            rows.append(_row(service, folder, deaf, pid))
        elif pid is not None:
            rows.append(_row(service, folder, "running", pid))
        elif service.ready_line is None and (state := _foreign_redis_state(service.address)):
            rows.append((service.title, state, redact_uri(service.address), "-", "-"))
            all_running = all_running and state.startswith("running")
        else:
            all_running = False
            rows.append(
                (
                    service.title,
                    "stopped",
                    redact_uri(service.address),
                    "-",
                    str(folder / f"{service.key}.log"),
                )
            )
    print(output.table(("SERVICE", "STATE", "ADDRESS", "PID", "LOG"), rows))
    return 0 if all_running else 1


def _foreign_redis_state(url: str) -> str:
    """The state of a Redis at ``url`` that aetherctl did not start ("" when none answers)."""
    try:
        return "running (not started by aetherctl)" if redis_answers(url) else ""
    except FailedPrecondition:
        return "refuses AETHER_REDIS_URL's credentials"


# processes -----------------------------------------------------------------------------------------


def _row(service: Service, folder: Path, state: str, pid: int) -> tuple[object, ...]:
    log_path = folder / f"{service.key}.log"
    address = _listening_address(service, log_path) or service.address
    return (service.title, state, redact_uri(address), pid, str(log_path))  # a Redis URL's password


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


# programmatic use (aetherctl demo) -------------------------------------------------------------------


def start_stack(
    settings: CliSettings,
    wait_s: float = 60.0,
    extra_env: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Starts the local stack described by ``settings`` and waits until every service is ready; all or
    nothing (FailedPrecondition naming the service that failed, the others stopped again). ``extra_env``
    is added to the services' environment, which starts from ``environ`` (default: this process's).

    Unlike ``dev up``'s, this stack is tied to the calling process: its services end when it does, even
    killed with SIGKILL (a test timeout, the OOM killer), instead of holding their ports, files and CPU
    until someone finds them."""
    folder = settings.home / "dev"
    with stack_lock(folder, wait_s=wait_s):
        _up(_services(settings, folder), folder, settings, wait_s, extra_env, tie=True, environ=environ)


def stop_stack(settings: CliSettings, grace_s: float = 10.0) -> None:
    folder = settings.home / "dev"
    with stack_lock(folder, wait_s=_down_lock_wait(grace_s)):
        _down(_services(settings, folder, starting=False), folder, grace_s)
