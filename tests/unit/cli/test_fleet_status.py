"""`aetherctl fleet status` tells the processes the endpoints file names from later ones with their pids.

A pid is handed out again once its process has ended: judged by ``kill(pid, 0)`` alone, a fleet gone for
days read as running (and its stale list as current) as soon as any process had its number. The file
records each process's start too; a process with the recorded pid and another start is not the one
recorded. A pid cannot be made to be reused on demand, so the tests give this very process's pid with the
start of an earlier one, which is exactly what a reused pid looks like."""

from __future__ import annotations

import io
import os
import re
import subprocess
from pathlib import Path

from clients.sdk.fleet import FleetEndpoints, FleetReplica
from control_plane.cli.fleet import print_status
from control_plane.deployments.process_start import ProcessState, process_start, process_state
from tests.support.ports import refused_address


def _earlier(start: str) -> str:
    """The start of a process that had this pid before: same boot, an earlier tick."""
    boot, ticks = start.rsplit(":", 1)
    return f"{boot}:{int(ticks) - 1}"


def _ended_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()  # reaped: no process has the pid (until the kernel hands it out again)
    return process.pid


def _status(endpoints: FleetEndpoints) -> list[str]:
    out = io.StringIO()
    assert print_status(endpoints, Path("endpoints.json"), False, 2.0, out) == 0
    return out.getvalue().splitlines()


def test_the_process_state_needs_the_pid_and_the_start() -> None:
    me = process_start(os.getpid())
    assert me and process_start(os.getpid()) == me  # stable for one process
    assert process_state(os.getpid(), me) is ProcessState.RUNNING
    assert process_state(os.getpid(), _earlier(me)) is ProcessState.REPLACED
    assert process_state(_ended_pid(), me) is ProcessState.GONE
    other_boot = "00000000-0000-0000-0000-000000000000:" + me.rsplit(":", 1)[1]
    assert process_state(os.getpid(), other_boot) is ProcessState.REPLACED  # the same tick, a boot ago
    # A file of an earlier fleet, which recorded no start: the pid is all there is to go on.
    assert process_state(os.getpid(), "") is ProcessState.UNKNOWN
    assert process_state(_ended_pid(), "") is ProcessState.GONE
    assert process_state(0, me) is ProcessState.GONE


def test_a_fleet_whose_pid_another_process_has_now_is_not_running() -> None:
    me = process_start(os.getpid())
    running = FleetEndpoints((), "t", os.getpid(), me)
    assert _status(running)[0] == f"fleet process {os.getpid()} (running), updated t, file endpoints.json"
    reused = FleetEndpoints((), "t", os.getpid(), _earlier(me))
    assert _status(reused)[0] == (
        f"fleet process {os.getpid()} (not running: pid {os.getpid()} is another process now; the list is "
        "stale), updated t, file endpoints.json"
    )
    gone = FleetEndpoints((), "t", _ended_pid(), me)
    assert "(not running: the list is stale)" in _status(gone)[0]
    unrecorded = FleetEndpoints((), "t", os.getpid())
    assert "(running, judged by its pid alone: the list may be stale)" in _status(unrecorded)[0]


def test_a_replica_whose_process_ended_is_gone_without_asking_its_address() -> None:
    me = process_start(os.getpid())
    closed = refused_address()  # nothing listens: a probe would say unreachable
    ended, replaced, live = _ended_pid(), os.getpid(), os.getpid()
    replicas = (
        FleetReplica(0, closed, "", ended, me),
        FleetReplica(1, closed, "", replaced, _earlier(me)),
        FleetReplica(2, closed, "", live, me),
    )
    lines = _status(FleetEndpoints(replicas, "t", os.getpid(), me))
    # The PID column is as wide as its widest pid: a shorter one is followed by more than two spaces.
    assert re.search(rf" {ended} +gone \(its process has ended\)$", lines[2]), lines[2]
    assert re.search(
        rf" {replaced} +gone \(its process has ended; pid {replaced} is another process now\)$", lines[3]
    ), lines[3]
    assert re.search(rf" {live} +unreachable \(UNAVAILABLE\)$", lines[4]), lines[4]  # its address is asked
