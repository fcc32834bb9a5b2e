"""The demo's own local stack: a scratch (or given) home, free loopback ports, and short loop intervals
so that the monitor, the canary controller, the jobs supervisor and the retrainer act within seconds."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def demo_settings(home: Path | None) -> CliSettings:
    """A stack of its own: a scratch home (or the given one) and free ports, so the demo never collides
    with a running ``aetherctl dev`` stack."""
    root = (home or Path(tempfile.mkdtemp(prefix="aether-demo-"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return CliSettings(
        home=root,
        db_url=f"sqlite:///{root / 'aether.db'}",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        control_plane_addr=f"127.0.0.1:{free_port()}",
        data_plane_addr=f"127.0.0.1:{free_port()}",
    )
