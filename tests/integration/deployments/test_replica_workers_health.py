"""Hung detection for a replica run with ``--workers N`` (real ``python -m data_plane`` processes against
a real control plane): each worker is probed on a port of its own, so one hung worker behind the shared
port (SO_REUSEPORT) is found, and the fleet's probe settings come from its variables and flags."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
from pathlib import Path

import pytest

from clients.env_values import ConfigurationError
from control_plane.cli import fleet as fleet_cli
from control_plane.cli import numbers
from control_plane.cli.main import build_parser
from control_plane.cli.settings import CliSettings
from control_plane.deployments.fleet import MAX_PROBE_S, FleetSettings
from control_plane.deployments.replica import ReplicaSettings
from control_plane.deployments.replicas import ReplicaManager
from tests.integration.deployments.conftest import Plane
from tests.integration.deployments.test_replicas import _children, _listening, _running, _until


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
async def test_a_replica_with_one_hung_worker_is_found_hung_and_replaced(plane: Plane) -> None:
    """Probes through the shared port reached whichever worker the kernel picked for each connection: a
    worker stopped (SIGSTOP here; a deadlock or a wedged event loop alike) missed only the probes that
    happened to reach it, its healthy sibling's answers cleared the misses, and the replica stayed listed
    with one worker's connections hanging."""
    misses = 4  # through the shared port, all four reaching the stopped worker: 1 in 16
    settings = ReplicaSettings(
        plane.address, plane.redis_url, plane.home / "replicas", start_timeout_s=60, health_timeout_s=0.5,
        hung_after_misses=misses, extra_args=("--workers", "2", "--drain-delay-s", "2"),
    )  # fmt: skip
    manager = ReplicaManager(settings)
    stopped = 0
    try:
        await manager.scale_to(1)
        (replica,) = manager.replicas
        workers = _children(replica.process.pid)
        assert len(workers) == 2 and sorted(replica.worker_pids) == sorted(workers)
        stopped, sibling = replica.worker_pids  # the pids in the order of the workers' own addresses
        os.kill(stopped, signal.SIGSTOP)  # fault injection: one worker hangs, its sibling serves on
        for _ in range(misses - 1):
            assert await manager.replace_failed() == 0
        assert await manager.replace_failed() == 1, "the replica with a hung worker is still listed"
        assert manager.hung == 1 and manager.count == 1 and manager.replicas[0] is not replica
        assert len(replica.worker_addresses) == 2 and replica.address not in replica.worker_addresses
        assert len(manager.replicas[0].worker_addresses) == 2  # its replacement's are probed as well
        # The hung worker is killed with its data plane: left to its lifeline, it held its ports for 30 s.
        hung_port = replica.worker_addresses[0]
        await _until(
            lambda: not _running(stopped) and not _listening(hung_port), "the hung worker lingers", 3
        )
        # Its healthy sibling drains (its lifeline's SIGTERM), and until it has gone the replica's number,
        # and so its folder, is not handed to the replacement.
        assert manager.replicas[0].number != replica.number
        await _until(lambda: not _running(sibling), "the healthy worker never drained", 20)
    finally:
        if stopped and _running(stopped):
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGCONT)
        await manager.close()


def test_the_probe_deadline_and_miss_count_come_from_the_fleets_variables_and_flags(tmp_path: Path) -> None:
    """They had no ``fleet run`` flag and no variable: every fleet probed with 2 s and 3 misses."""
    env = {
        "AETHER_HOME": str(tmp_path),
        "AETHER_REPLICA_HEALTH_TIMEOUT_S": "0.75",
        "AETHER_REPLICA_HUNG_AFTER_MISSES": "5",
    }
    replica = FleetSettings.from_env(env).replica_settings()
    assert (replica.health_timeout_s, replica.hung_after_misses) == (0.75, 5)
    defaults = FleetSettings(home=tmp_path).replica_settings()
    assert (defaults.health_timeout_s, defaults.hung_after_misses) == (2.0, 3)

    parser = build_parser(CliSettings.from_env(env))
    args = parser.parse_args(["fleet", "run", "--health-timeout-s", "1.5", "--hung-after-misses", "2"])
    replica = fleet_cli.settings_from_args(args, env).replica_settings()
    assert (replica.health_timeout_s, replica.hung_after_misses) == (1.5, 2)

    with pytest.raises(ConfigurationError, match="AETHER_REPLICA_HUNG_AFTER_MISSES"):
        FleetSettings.from_env({**env, "AETHER_REPLICA_HUNG_AFTER_MISSES": "0"})
    with pytest.raises(ConfigurationError, match="AETHER_REPLICA_HEALTH_TIMEOUT_S"):
        FleetSettings.from_env({**env, "AETHER_REPLICA_HEALTH_TIMEOUT_S": "0"})
    assert numbers.probe_seconds(str(MAX_PROBE_S)) == MAX_PROBE_S  # the flag's range is the variable's
    for bad in ("0", "61", "nan"):
        with pytest.raises(argparse.ArgumentTypeError):
            numbers.probe_seconds(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        numbers.at_least_one("0")
