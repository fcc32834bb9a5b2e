"""The lines `aetherctl fleet run` prints for a change of its ready replicas."""

from __future__ import annotations

import pytest

from clients.sdk.fleet import FleetEndpoints, FleetReplica
from control_plane.cli.fleet import _print_change
from control_plane.deployments.autoscale_loop import ScaleEvent
from control_plane.deployments.autoscaler import Load

LISTED = FleetEndpoints(
    (FleetReplica(0, "127.0.0.1:4001", "", 11), FleetReplica(1, "127.0.0.1:4002", "", 12)), "t", 1
)


def test_a_scaling_says_how_many_replicas_its_load_left_out(capsys: pytest.CaptureFixture[str]) -> None:
    """A replica that could not be scraped is left out of the queue and p99 the line shows: it read as the
    whole fleet's load ("queue 40") while one replica's, maybe the longest, was not in it."""
    _print_change(LISTED, ScaleEvent(0.0, Load(1, 40.0, 12.0, unmeasured=1), 2))
    _print_change(LISTED, ScaleEvent(0.0, Load(1, 40.0, None), 2))
    _print_change(LISTED, ScaleEvent(0.0, Load(3, 0.0, None, unmeasured=2, stalled=1), 2))
    assert capsys.readouterr().out.splitlines() == [
        "scaled to 2 replicas (queue 40, p99 12.0 ms, 1 replica not measured): "
        "127.0.0.1:4001, 127.0.0.1:4002",
        "scaled to 2 replicas (queue 40, p99 n/a): 127.0.0.1:4001, 127.0.0.1:4002",
        "scaled to 2 replicas (queue 0, p99 n/a, 2 replicas not measured, 1 replica stalled): "
        "127.0.0.1:4001, 127.0.0.1:4002",
    ]
