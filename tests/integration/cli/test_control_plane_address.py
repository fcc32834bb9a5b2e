"""The control plane's address as every ``aetherctl`` command that calls it takes it (``--control-plane``,
or ``AETHER_CONTROL_PLANE_ADDR``): a malformed one is a usage error (exit 2) before any call, and one where
nothing answers says, in one line, where the command looked and how to start a control plane there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from control_plane.cli.main import main
from tests.support.ports import refused_address

REPO = Path(__file__).resolve().parents[3]
Capture = pytest.CaptureFixture[str]
EXPECTED = "expected HOST:PORT with a port from 1 to 65535 (e.g. 127.0.0.1:50051)"

#: One command of each group that calls the control plane.
CALLING = [
    ["features", "list"],
    ["models", "list"],
    ["lineage", "eta", "1"],
    ["experiments", "list"],
    ["runs", "list", "exp"],
    ["deploy", "list"],
    ["jobs", "list"],
    ["audit", "list"],
    ["quarantine", "list"],
    ["drift", "report", "eta-prod"],
    ["monitor", "show", "eta-prod"],
    ["retrain", "history", "eta-prod"],
]


def aetherctl(capsys: Capture, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--timeout", "5", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_port_past_65535_does_not_reach_another_port(control_plane: str, capsys: Capture) -> None:
    # gRPC took the port modulo 65536: 127.0.0.1:(P + 65536) reached whatever listened on port P, here a
    # control plane the user never named (`models list` answered from it, exit 0).
    host, _, port = control_plane.rpartition(":")
    wrapped = f"{host}:{int(port) + 65536}"
    code, out, err = aetherctl(capsys, "--control-plane", wrapped, "models", "list")
    assert (code, out) == (2, "")
    assert err == f"aetherctl: error: --control-plane: {EXPECTED}, got {wrapped!r}\n"


@pytest.mark.parametrize(
    "address",
    ["", "127.0.0.1", "localhost", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:99999", ":50051", "a:b:50051",
     "127.0.0.1:5o051", " 127.0.0.1:50051", "[::1]"],
)  # fmt: skip
def test_a_malformed_address_is_a_usage_error_before_any_call(capsys: Capture, address: str) -> None:
    # "" ended in gRPC's own log lines on stderr and "error: UNKNOWN: Failed to create channel"; a host
    # without a port dialled port 443; ":50051" (a listen address) an empty host.
    for command in CALLING:
        code, out, err = aetherctl(capsys, "--control-plane", address, *command)
        assert (code, out) == (2, ""), command
        assert err == f"aetherctl: error: --control-plane: {EXPECTED}, got {address!r}\n", command
    # Given after the command, as every group also takes it.
    code, _, err = aetherctl(capsys, "models", "list", "--control-plane", address)
    assert (code, err) == (2, f"aetherctl: error: --control-plane: {EXPECTED}, got {address!r}\n")


@pytest.mark.parametrize("form", ["localhost:{port}", "dns:///127.0.0.1:{port}", "ipv4:127.0.0.1:{port}"])
def test_well_formed_addresses_and_grpc_targets_still_reach_the_control_plane(
    control_plane: str, capsys: Capture, form: str
) -> None:
    port = control_plane.rpartition(":")[2]
    code, out, err = aetherctl(capsys, "--control-plane", form.format(port=port), "models", "list")
    assert (code, err) == (0, ""), err
    assert out.split() == ["MODEL", "LATEST", "ALIASES", "TAGS", "UPDATED"]


def run_with_environment(tmp_path: Path, address: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AETHER_HOME": str(tmp_path), "AETHER_CONTROL_PLANE_ADDR": address}
    return subprocess.run(
        [sys.executable, "-m", "control_plane.cli.main", "--timeout", "5", *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_malformed_address_in_the_environment_names_the_variable(tmp_path: Path) -> None:
    done = run_with_environment(tmp_path, "127.0.0.1:99999", "models", "list")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"error: AETHER_CONTROL_PLANE_ADDR: {EXPECTED}, got '127.0.0.1:99999'\n"
    # The flag overrides the variable: its value is the one checked, and it is fine.
    done = run_with_environment(
        tmp_path, "127.0.0.1:99999", "--control-plane", refused_address(), "jobs", "list"
    )
    assert done.returncode == 1 and done.stderr.startswith("error: UNAVAILABLE: "), done.stderr


def test_commands_that_do_not_call_the_control_plane_ignore_its_address(tmp_path: Path) -> None:
    # fleet status reads a local file: an unusable AETHER_CONTROL_PLANE_ADDR is none of its business.
    done = run_with_environment(tmp_path, "nonsense", "fleet", "status", "--endpoints", str(tmp_path / "no"))
    assert done.returncode == 1
    missing = f"no fleet endpoints file at {tmp_path / 'no'} (is `aetherctl fleet run` running?)"
    assert done.stderr == f"error: UNAVAILABLE: {missing}\n"


APPLY = ["features", "apply", str(REPO / "examples" / "features.yaml")]


@pytest.mark.parametrize("command", [*CALLING, APPLY], ids=lambda command: " ".join(command[:2]))
def test_an_unreachable_control_plane_is_one_line_saying_where_it_was_looked_for(
    capsys: Capture, command: list[str]
) -> None:
    # Only `features` said "is the control plane running at ...?"; every other command printed gRPC's
    # "failed to connect to all addresses; last error: UNKNOWN: ipv4:...: Connection refused" alone.
    address = refused_address()
    code, out, err = aetherctl(capsys, "--control-plane", address, *command)
    assert (code, out) == (1, "")
    assert err.startswith("error: UNAVAILABLE: ") and err.count("\n") == 1, err
    assert err.endswith(f" (is the control plane running at {address}? `aetherctl dev up` starts one)\n"), err


@pytest.mark.parametrize(
    ("flags", "variable", "error"),
    [
        (["--control-plane", "127.0.0.1:99999", "fleet", "run"], "", "aetherctl: error: --control-plane"),
        (["fleet", "run", "--control-plane", "localhost"], "", "aetherctl: error: --control-plane"),
        (["fleet", "run"], "127.0.0.1:99999", "error: AETHER_CONTROL_PLANE_ADDR"),
    ],
    ids=["global-flag", "fleet-flag", "variable"],
)
def test_fleet_run_checks_the_address_it_hands_its_replicas(
    tmp_path: Path, flags: list[str], variable: str, error: str
) -> None:
    """fleet run handed any address to its replicas, which dialled it as gRPC took it (127.0.0.1:99999:
    port 34463; a host without a port: 443), and ran on, watching nothing. Refused before it starts."""
    env = {**os.environ, "AETHER_HOME": str(tmp_path), "AETHER_CONTROL_PLANE_ADDR": variable}
    address = flags[flags.index("--control-plane") + 1] if "--control-plane" in flags else variable
    command = [sys.executable, "-m", "control_plane.cli.main", *flags, "--min", "1", "--max", "1"]
    # A fleet that started would run until stopped: the timeout ends it (a failure, with its replicas).
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=30, check=False)
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr == f"{error}: {EXPECTED}, got {address!r}\n"
    assert not (tmp_path / "fleet").exists()  # nothing started
