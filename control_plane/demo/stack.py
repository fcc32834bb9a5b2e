"""The demo's own local stack: a scratch (or given) home, free loopback ports, and short loop intervals
so that the monitor, the canary controller, the jobs supervisor and the retrainer act within seconds.

A scratch home (no ``--home``) is removed when the demo ends well (5-10 MB a run piled up in the temp
folder). It is kept, and its path printed, when the demo failed or was interrupted (its logs say why) or
while a process still uses it (a job the control plane started outlives the control plane)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path

from clients.files import private_folder
from control_plane.cli.settings import CliSettings

#: The prediction log samples every request (so every labelled request is monitorable) and the control
#: plane's loops tick every second or so instead of every half minute.
STACK_ENV = {
    "AETHER_PREDICTION_LOG_SAMPLE_RATE": "1.0",
    "AETHER_MONITOR_INTERVAL_S": "1",
    "AETHER_MONITOR_PERFORMANCE_INTERVAL_S": "1",
    "AETHER_CANARY_INTERVAL_S": "1",
    "AETHER_RETRAIN_INTERVAL_S": "2",
    "AETHER_JOBS_TICK_S": "0.2",
    "AETHER_JOBS_KILL_GRACE_S": "2",
}


#: The user's settings the demo's stack keeps: credentials and transport security. The demo's own SDK
#: clients read them from the same shell, so the stack must expect what they send.
KEPT_USER_SETTINGS = (
    "AETHER_TOKEN",
    "AETHER_TOKEN_FILE",
    "AETHER_ADMIN_TOKEN",
    "AETHER_ADMIN_TOKEN_FILE",
    "AETHER_READONLY_TOKEN",
    "AETHER_READONLY_TOKEN_FILE",
    "AETHER_TLS_CA",
    "AETHER_TLS_CERT",
    "AETHER_TLS_KEY",
    "AETHER_TLS_SERVER_NAME",
)


def stack_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without the user's other ``AETHER_*`` settings: the demo's stack lives under its own
    home. Inherited, they sent its jobs to the user's AETHER_JOBS_DIR, its drift alerts to the user's
    AETHER_MONITOR_WEBHOOK_URL, its datasets to the user's AETHER_DATASETS_ROOT, and so on."""
    return {
        name: value
        for name, value in environ.items()
        if not name.startswith("AETHER_") or name in KEPT_USER_SETTINGS
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def demo_settings(home: Path | None) -> CliSettings:
    """A stack of its own: a scratch home (or the given one) and free ports, so the demo never collides
    with a running ``aetherctl dev`` stack."""
    root = (home or Path(tempfile.mkdtemp(prefix="aether-demo-"))).resolve()
    private_folder(root)
    return CliSettings(
        home=root,
        db_url=f"sqlite:///{root / 'aether.db'}",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        control_plane_addr=f"127.0.0.1:{free_port()}",
        data_plane_addr=f"127.0.0.1:{free_port()}",
    )


def users_of(home: Path) -> list[int]:
    """Pids of this user's live processes started for ``home`` (``AETHER_HOME`` in their environment, as
    the planes and the jobs they launch have) or working in it. Empty without procfs (macOS)."""
    found: list[int] = []
    marker = f"AETHER_HOME={home}".encode()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cwd = Path(os.readlink(entry / "cwd"))
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):  # gone meanwhile, or another user's
            continue
        if state != "Z" and (marker in environ or cwd == home or home in cwd.parents):
            found.append(int(entry.name))
    return found


def remove_scratch(home: Path) -> str:
    """Removes the scratch ``home``; what the user should know when it was kept instead (else "")."""
    users = users_of(home)
    if users:
        pids = ", ".join(map(str, users))
        return f"scratch state kept in {home}: processes {pids} still use it (remove it once they end)"
    shutil.rmtree(home, ignore_errors=True)
    return ""
