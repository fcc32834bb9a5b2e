"""``aetherctl`` imports what the command it runs needs, and nothing for the parser: each command module
imports its dependencies (the SDK and grpc, pyarrow, the control plane's modules) in the functions that run
the command. Imported at the top of the command modules they took about a second of every start, ``--help``
and a usage error included (numba, SQLAlchemy and alembic through the feature definitions, pyarrow, numpy
through the demo's world, grpc through the SDK and ``clients.errors``), and the tests and scripts start
``aetherctl`` many times.

Each check runs in a fresh interpreter: this one has imported all of it already."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

#: Third-party packages no command needs just to parse its flags; only grpc may come once a command runs.
HEAVY = ("numpy", "scipy", "pyarrow", "pandas", "torch", "numba", "sqlalchemy", "alembic", "onnxruntime",
         "redis", "yaml", "grpc")  # fmt: skip
#: Project modules a command imports when it runs, if it needs them (their imports are heavy too).
DEFERRED = ("clients.errors", "clients.sdk", "control_plane.cli.local_stack", "control_plane.demo.world",
            "control_plane.demo.scenario", "control_plane.features.definitions", "control_plane.db",
            "control_plane.deployments", "control_plane.monitoring", "control_plane.offline")  # fmt: skip

# Runs aetherctl's main() on each command line given (as JSON in argv[1]) and prints the exit codes and the
# modules loaded, as JSON. Output of the commands themselves goes nowhere.
_RUN = """
import contextlib, io, json, sys
from control_plane.cli.main import main

codes = []
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        codes.append(main(argv))
print(json.dumps({"codes": codes, "modules": sorted(sys.modules)}))
"""

# Every command line that reaches a leaf of the parser (`features list`, `deploy canary start`...).
_LEAVES = """
import argparse, json
from control_plane.cli.main import build_parser
from control_plane.cli.settings import CliSettings

def leaves(parser, path):
    found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not found:
        return [path]
    return [leaf for name, sub in found[0].choices.items() for leaf in leaves(sub, [*path, name])]

print(json.dumps(leaves(build_parser(CliSettings.from_env()), [])))
"""


def _python(code: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _run(*command_lines: list[str]) -> tuple[list[int], list[str]]:
    answer = json.loads(_python(_RUN, json.dumps(command_lines)))
    return answer["codes"], answer["modules"]


def _among(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == name or m.startswith(f"{name}.") for name in names)]


def test_help_and_usage_errors_import_no_command_dependencies() -> None:
    leaves: list[list[str]] = json.loads(_python(_LEAVES))
    assert ["features", "list"] in leaves and ["deploy", "canary", "start"] in leaves  # the walk found them
    helps = [["--help"], *[[*leaf, "--help"] for leaf in leaves]]
    usage_errors = [["features", "list", "--no-such-flag"], ["deploy"], ["no-such-command"]]
    codes, modules = _run(*helps, *usage_errors)
    assert codes == [0] * len(helps) + [2] * len(usage_errors)
    assert _among(modules, HEAVY) == []
    assert _among(modules, DEFERRED) == []


def test_a_command_talking_to_the_control_plane_imports_grpc_but_not_the_servers_stack() -> None:
    # Nothing listens on port 9 (discard): every call fails at once with UNAVAILABLE, exit status 1.
    address = ["--control-plane", "127.0.0.1:9", "--timeout", "5"]
    commands = [["features", "list"], ["audit", "list"], ["models", "list"], ["deploy", "list"],
                ["jobs", "list"], ["monitor", "show", "eta"], ["retrain", "history", "eta"],
                ["quarantine", "list"], ["experiments", "list"]]  # fmt: skip
    codes, modules = _run(*[[*address, *command] for command in commands])
    assert codes == [1] * len(commands)
    assert "grpc" in modules
    assert _among(modules, tuple(name for name in HEAVY if name != "grpc")) == []
    assert _among(modules, DEFERRED[2:]) == []  # the SDK and its errors are what these commands need
