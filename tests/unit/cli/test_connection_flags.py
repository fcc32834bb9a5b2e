"""Every command group that calls the control plane takes ``--control-plane`` and ``--timeout`` after its
command too, overriding the global ones."""

from __future__ import annotations

import pytest

from control_plane.cli.main import build_parser
from control_plane.cli.settings import CliSettings


@pytest.mark.parametrize(
    "command",
    [
        ["quarantine", "list"],
        ["quarantine", "show", "7"],
        ["materialize", "v", "--start", "2026-01-01", "--end", "2026-01-02"],
        ["features", "list"],
        ["runs", "list", "exp"],
    ],
)
def test_connection_flags_after_the_command_override_the_global_ones(command: list[str]) -> None:
    # materialize and quarantine refused them ("unrecognized arguments") though their peers took them.
    parser = build_parser(CliSettings.from_env({"AETHER_CONTROL_PLANE_ADDR": "global:1"}))
    args = parser.parse_args([*command, "--control-plane", "here:2", "--timeout", "7"])
    assert (args.control_plane, args.timeout) == ("here:2", 7.0)
    assert parser.parse_args(command).control_plane == "global:1"


@pytest.mark.parametrize(
    "command",
    [["audit", "list"], ["audit", "verify"], ["audit", "export", "audit.jsonl"]],
)
def test_audit_takes_the_connection_flags_after_its_command(command: list[str]) -> None:
    # `aetherctl audit verify --control-plane HOST:PORT` was "unrecognized arguments", as only the global
    # flags before `audit` reached it.
    parser = build_parser(CliSettings.from_env({"AETHER_CONTROL_PLANE_ADDR": "global:1"}))
    args = parser.parse_args([*command, "--control-plane", "here:2", "--timeout", "7"])
    assert (args.control_plane, args.timeout) == ("here:2", 7.0)
    assert parser.parse_args(command).control_plane == "global:1"


def test_historical_takes_the_control_plane_after_its_command() -> None:
    # Its time limit is --deadline (the whole build), so only the address is taken after the command.
    parser = build_parser(CliSettings.from_env({"AETHER_CONTROL_PLANE_ADDR": "global:1"}))
    command = ["historical", "--entities", "rows.parquet", "--features", "v"]
    assert parser.parse_args([*command, "--control-plane", "here:2"]).control_plane == "here:2"
    assert parser.parse_args(command).control_plane == "global:1"
