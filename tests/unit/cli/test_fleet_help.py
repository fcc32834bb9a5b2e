"""`aetherctl fleet run|status --help` say what each flag defaults to, as the README's settings table does.

`--min` and `--max` named their variable while `--interval-s`, `--target-queue-per-replica`,
`--target-p99-ms`, `--up-window-s` and `--down-window-s` named neither variable nor default, so a user
learnt of `AETHER_AUTOSCALE_INTERVAL_S` (30 s) only from the README; and `fleet status --endpoints` gave its
default as `$AETHER_HOME/fleet/…`, the file's name cut off."""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

import pytest

from control_plane.cli import fleet
from control_plane.deployments.autoscale_loop import POLICY_VARIABLES
from control_plane.deployments.autoscaler import AutoscalerPolicy
from control_plane.deployments.fleet import endpoints_path


def _help(*action: str) -> str:
    parser = argparse.ArgumentParser(prog="aetherctl")
    fleet.register(parser.add_subparsers(dest="command", required=True))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        parser.parse_args(["fleet", *action, "--help"])
    return " ".join(out.getvalue().split())  # argparse wraps lines wherever the terminal width says


def _flag_help(text: str, flag: str) -> str:
    """The help of ``flag`` in ``text``: from its entry in the options list to the next option."""
    entry = text.index(f" {flag} ", text.index("options:"))
    following = text.find(" --", entry + len(flag) + 2)
    return text[entry : following if following != -1 else len(text)]


def test_every_policy_flag_names_its_variable_and_the_policy_default() -> None:
    text = _help("run")
    flag_of_field = {field: dest.replace("_", "-") for dest, field in fleet.POLICY_FLAGS.items()}
    defaults = AutoscalerPolicy()
    for variable, rule in POLICY_VARIABLES.items():
        flag_help = _flag_help(text, f"--{flag_of_field[rule.policy_field]}")
        default = getattr(defaults, rule.policy_field)
        assert f"${variable}, {default:g}" in flag_help, flag_help


def test_status_names_the_default_endpoints_file() -> None:
    text = _help("status")
    default = str(endpoints_path(Path("$AETHER_HOME")))
    assert default == "$AETHER_HOME/fleet/endpoints.json"
    assert default in _flag_help(text, "--endpoints")
